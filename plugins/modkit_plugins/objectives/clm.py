"""The `clm` objective: causal language modelling, L1 = sum_i log P(u_i | u_<i)."""
from __future__ import annotations

from pydantic import Field

import modkit
from modkit.runtime.generation import GenerationOptions


class CLMOptions(modkit.Options):
    holdout: float = Field(0.05, ge=0, lt=1, description="Fraction of the text (its end) held back for evaluation.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the training loss's cross-entropy (0: none).")


class GenerateOptions(GenerationOptions):
    max_new_tokens: int | None = Field(None, gt=0, description="How many tokens to add at most; default what the "
                                                               "artifact's max_length leaves after the prompt, "
                                                               "else 32.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("clm", "modkit_plugins.objectives.clm_impl:CausalLM", options=CLMOptions,
             doc="Next-token prediction over random windows of a text file.")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("generate", "modkit_plugins.objectives.clm_task:GenerateTask", options=GenerateOptions,
             doc="Each text continued: greedy, sampled or beam search, in batches over the cached step graph.")
