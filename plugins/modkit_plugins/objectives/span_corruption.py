"""The `span-corruption` objective (T5's pretraining); its artifacts serve as `seq2seq`."""
from __future__ import annotations

from pydantic import Field

import modkit


class SpanCorruptionOptions(modkit.Options):
    noise_density: float = Field(0.15, gt=0, lt=1, description="Share of the tokens dropped into spans.")
    mean_noise_span_length: float = Field(3.0, ge=1, description="Mean length of a dropped span.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    holdout: float = Field(0.05, ge=0, lt=1, description="Fraction of the text (its end) held back for evaluation.")
    max_new_tokens: int = Field(64, gt=0, description="Generation length recorded for `modkit run`.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("span-corruption", "modkit_plugins.objectives.span_corruption_impl:SpanCorruption",
             options=SpanCorruptionOptions,
             doc="T5's span corruption: 15 % of the tokens in spans of mean 3 -> sentinels; target = sentinel + span ...")
