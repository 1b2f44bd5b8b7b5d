"""The `mlm` objective (BERT's masked language model) and the `fill-mask` task that serves it."""
from __future__ import annotations

from pydantic import Field, model_validator

import modkit


class MLMOptions(modkit.Options):
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of the non-special tokens chosen for prediction.")
    mask_replace_prob: float = Field(0.8, ge=0, le=1, description="Of the chosen tokens, the share replaced by the mask token.")
    random_replace_prob: float = Field(0.1, ge=0, le=1, description="Of the chosen tokens, the share replaced by a random "
                                                                    "(non-special) token; the rest stay as they are.")
    whole_word_mask: bool = Field(False, description="Choose whole words: every sub-token of a chosen word is predicted "
                                                     "(words: WordPiece's '##' pieces, else tokens not separated by a gap).")
    holdout: float = Field(0.05, ge=0, lt=1, description="Fraction of the text (its end) held back for evaluation.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the masked tokens' cross-entropy (0: none).")
    top_k: int = Field(5, gt=0, description="Fillers `modkit run` prints per mask.")

    @model_validator(mode="after")
    def _rates_fit(self):
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must be at most 1")
        return self


class FillMaskOptions(modkit.Options):
    top_k: int | None = Field(None, gt=0, description="Fillers per mask; default the build's top_k.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("mlm", "modkit_plugins.objectives.mlm_impl:MaskedLM", options=MLMOptions,
             doc="BERT's masked LM: 15 % of the tokens chosen, 80/10/10 mask/random/keep; any encoder.")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("fill-mask", "modkit_plugins.objectives.fill_mask_task:FillMaskTask", options=FillMaskOptions,
             doc="The top-k fillers of each mask token with their probabilities (as transformers' fill-mask pipeline).")
