"""The `classify` objective: a head on the last token; with aux_lm_weight it is GPT's L3; GPT's
input formats for pairs, similarity and multiple choice."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modkit


class ClassifyOptions(modkit.Options):
    format: Literal["single", "pair", "similarity", "choice"] = Field(
        "single", description="GPT's input format: single (one text), pair (text · delimiter · text_pair, "
                              "entailment), similarity (the pair in both orders, states summed), choice "
                              "(text · delimiter · each of choices, one score per choice).")
    labels: list[str] | None = Field(None, min_length=2, description="The class names, in output order "
                                                                     "(not for format = \"choice\": the label is the choice's index).")
    aux_lm_weight: float = Field(0.0, ge=0, description="λ in L3 = L2 + λ·L1 (GPT's auxiliary LM loss); 0 = plain L2.")
    text_field: str = Field("text", description="JSONL field holding the text.")
    text_pair_field: str = Field("text_pair", description="JSONL field holding the second text (pair, similarity).")
    choices_field: str = Field("choices", description="JSONL field holding the list of candidate answers (choice).")
    label_field: str = Field("label", description="JSONL field holding the label (choice: the right choice's index).")
    holdout: float = Field(0.1, ge=0, lt=1, description="Fraction of examples held back for evaluation.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the classification loss's (not the auxiliary LM's) cross-entropy (0: none).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout before the classification head.")
    pooling: Literal["auto", "last", "first", "pooler"] = Field(
        "auto", description="State the head reads: last real token (GPT's extract token), first token "
                            "([CLS]), or the backbone's pooler output; auto = last for decoders, else "
                            "the pooler output where the backbone has one, else the first token.")

    @model_validator(mode="after")
    def _labels_fit_format(self):
        if self.format == "choice" and self.labels is not None:
            raise ValueError("format = \"choice\" takes no labels: the label is the index of the right choice")
        if self.format != "choice" and self.labels is None:
            raise ValueError(f"format = \"{self.format}\" needs labels (the class names)")
        return self


@modkit.hookimpl
def modkit_register_objectives(register):
    register("classify", "modkit_plugins.objectives.classify_impl:Classify", options=ClassifyOptions,
             doc="Sequence classification (GPT's extract token or BERT's [CLS]) of texts, pairs or multiple choices "
                 "(GPT's task formats), optionally with GPT's auxiliary LM loss.")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("classify", "modkit_plugins.objectives.classify_task:ClassifyTask",
             doc="A label and class probabilities per text or pair; for multiple choice the chosen index and a probability per choice.")
