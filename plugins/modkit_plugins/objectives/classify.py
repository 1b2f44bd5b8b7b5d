"""The `classify` objective: a head on the last token; with aux_lm_weight it is GPT's L3."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

import modkit


class ClassifyOptions(modkit.Options):
    labels: list[str] = Field(min_length=2, description="The class names, in output order.")
    aux_lm_weight: float = Field(0.0, ge=0, description="λ in L3 = L2 + λ·L1 (GPT's auxiliary LM loss); 0 = plain L2.")
    text_field: str = Field("text", description="JSONL field holding the text.")
    label_field: str = Field("label", description="JSONL field holding the label.")
    holdout: float = Field(0.1, ge=0, lt=1, description="Fraction of examples held back for evaluation.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout before the classification head.")
    pooling: Literal["auto", "last", "first", "pooler"] = Field(
        "auto", description="State the head reads: last real token (GPT's extract token), first token "
                            "([CLS]), or the backbone's pooler output; auto = last for decoders, else "
                            "the pooler output where the backbone has one, else the first token.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("classify", "modkit_plugins.objectives.classify_impl:Classify", options=ClassifyOptions,
             doc="Sequence classification (GPT's extract token or BERT's [CLS]), optionally with GPT's auxiliary LM loss.")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("classify", "modkit_plugins.objectives.classify_task:ClassifyTask",
             doc="A label and class probabilities per text.")
