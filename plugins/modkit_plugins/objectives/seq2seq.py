"""The `seq2seq` objective: learn to map a source text to a target text (encoder-decoders)."""
from __future__ import annotations

from pydantic import Field

import modkit
from modkit.runtime.generation import GenerationOptions


class Seq2SeqOptions(modkit.Options):
    source_key: str = Field("source", description="JSONL field holding the input text.")
    target_key: str = Field("target", description="JSONL field holding the text to produce.")
    max_target_len: int | None = Field(None, gt=1, description="Longest target in tokens; default the stage's seq_len.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    holdout: float = Field(0.1, ge=0, lt=1, description="Fraction of pairs held back for evaluation.")
    eval_examples: int = Field(64, ge=0, description="Held-back pairs scored by evaluate (loss, token accuracy, exact match).")
    max_new_tokens: int = Field(64, gt=0, description="Generation length recorded for `modkit run`.")


class Seq2SeqRunOptions(GenerationOptions):
    max_new_tokens: int | None = Field(None, gt=0, description="Longest output; default the build's max_new_tokens.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("seq2seq", "modkit_plugins.objectives.seq2seq_impl:Seq2Seq", options=Seq2SeqOptions,
             doc="Sequence to sequence: cross-entropy on the target given the source (JSONL source/target).")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("seq2seq", "modkit_plugins.objectives.seq2seq_task:Seq2SeqTask", options=Seq2SeqRunOptions,
             doc="The generated target text per source text: greedy, sampled or beam search over the cached decoder.")
