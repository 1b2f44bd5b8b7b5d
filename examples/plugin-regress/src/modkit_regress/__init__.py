"""modkit-regress: the `regress` objective (training, torch) and task (serving, torch-free).

Cheap to import: options and hooks only; both implementations load on first use.
"""
from pydantic import Field

import modkit

__version__ = "0.1.0"


class RegressOptions(modkit.Options):
    text_field: str = Field("text", description="JSONL field holding the text.")
    value_field: str = Field("value", description="JSONL field holding the number to predict.")
    holdout: float = Field(0.1, ge=0, lt=1, description="Fraction of examples held back for evaluation.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("regress", "modkit_regress.objective:Regress", options=RegressOptions,
             doc="A number per text: a linear head on one hidden state, mean squared error.")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("regress", "modkit_regress.task:RegressTask", doc="The predicted number per text.")
