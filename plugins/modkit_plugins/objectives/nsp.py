"""The `nsp` objective (BERT's next-sentence prediction) and the `next-sentence` task."""
from __future__ import annotations

from pydantic import Field

import modkit


class NSPOptions(modkit.Options):
    not_next_prob: float = Field(0.5, gt=0, lt=1, description="Share of pairs whose second sentence comes from another document.")
    holdout: float = Field(0.1, ge=0, lt=1, description="Fraction of the documents held back for evaluation.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the is-next cross-entropy (0: none).")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("nsp", "modkit_plugins.objectives.nsp_impl:NextSentence", options=NSPOptions,
             doc="BERT's next-sentence prediction: [CLS] A [SEP] B [SEP], B next (label 0) or from another document (1).")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("next-sentence", "modkit_plugins.objectives.nsp_task:NextSentenceTask",
             doc="Probability that text_pair follows text (IsNext / NotNext).")
