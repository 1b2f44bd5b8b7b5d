"""The `prompt` PEFT method: prompt tuning (Lester et al. 2021), trained virtual-token embeddings
before the input."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modkit


class PromptOptions(modkit.Options):
    num_virtual_tokens: int = Field(20, gt=0, description="Number of trained virtual tokens before the input; "
                                                          "they take the first positions.")
    init: Literal["random", "vocab", "text"] = Field(
        "random", description="random: normal, with the spread of the token embeddings; vocab: embeddings of "
                              "random vocabulary tokens (Lester et al.); text: the embeddings of `init_text`'s "
                              "tokens, repeated or cut to num_virtual_tokens (Hugging Face's TEXT).")
    init_text: str | None = Field(None, description="The text whose token embeddings start the prompt "
                                                    "(init = \"text\"), e.g. \"Classify the sentiment:\".")

    @model_validator(mode="after")
    def _text_given_for_text_init(self) -> PromptOptions:
        if self.init == "text" and not self.init_text:
            raise ValueError('init = "text" needs init_text')
        if self.init_text and self.init != "text":
            raise ValueError('init_text is read only with init = "text"')
        return self


@modkit.hookimpl
def modkit_register_peft_methods(register):
    register("prompt", "modkit_plugins.peft.prompt_impl:PromptTuning", options=PromptOptions,
             doc="Prompt tuning: trained virtual-token embeddings before the input; frozen to constants on merge.")
