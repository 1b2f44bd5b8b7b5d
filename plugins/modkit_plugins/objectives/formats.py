"""The token rows `classify` feeds its model for one record, in GPT's four input formats
(Radford et al. 2018, figure 1). Torch-free: the objective and the served task encode with
the same code, so serving reads exactly what training read.

- ``single``: ``start text extract``;
- ``pair`` (entailment): ``start premise delimiter hypothesis extract``;
- ``similarity``: that sequence in both orders, two rows per example;
- ``choice``: ``start context delimiter answer_k extract``, one row per choice.

A tokenizer with a template (BERT's ``[CLS] a [SEP] b [SEP]``) builds each sequence with it
instead, segment ids included, and start/delimiter/extract are not used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from modkit.runtime import pad_ids
from modkit.tokenization import truncate_pair

from .pairs import pair_ids

FORMATS = ("single", "pair", "similarity", "choice")
#: formats with several rows per example: the model reads (B, K, T) inputs
GROUPED = ("similarity", "choice")
#: the record fields each format reads (besides the label)
FIELDS = {"single": ("text",), "pair": ("text", "text_pair"), "similarity": ("text", "text_pair"),
          "choice": ("text", "choices")}

Row = tuple[list[int], list[int]]  # ids, segment ids


@dataclass(frozen=True)
class Layout:
    format: str = "single"
    use_template: bool = False
    start: tuple[int, ...] = ()
    delimiter: tuple[int, ...] = ()
    extract: tuple[int, ...] = ()
    max_length: int = 10**9

    @classmethod
    def from_task(cls, task: dict[str, Any], max_positions: int | None = None) -> Layout:
        """The layout a manifest's task record describes (what ``Classify.describe`` wrote)."""
        return cls(task.get("format", "single"), bool(task.get("use_template")), tuple(task.get("prepend_ids", ())),
                   tuple(task.get("delimiter_ids", ())), tuple(task.get("append_ids", ())),
                   task.get("max_length") or max_positions or 10**9)

    def sequence(self, tokenizer, a: list[int], b: list[int] | None = None) -> Row:
        """One sequence of ``a`` (and ``b``), cut to ``max_length`` (the longer text first)."""
        if self.use_template:
            return pair_ids(tokenizer, a, b, self.max_length)
        added = len(self.start) + len(self.extract) + (len(self.delimiter) if b is not None else 0)
        keep_a, keep_b = truncate_pair(a, b, self.max_length - added)
        ids = [*self.start, *a[:keep_a], *((*self.delimiter, *b[:keep_b]) if b is not None else ()), *self.extract]
        return ids, [0] * len(ids)

    def rows(self, tokenizer, text: str, text_pair: str | None = None,
             choices: Sequence[str] | None = None) -> list[Row]:
        """The rows of one example: one, or two (similarity), or one per choice."""
        a = tokenizer.encode(text)
        if self.format == "single":
            return [self.sequence(tokenizer, a)]
        if self.format == "choice":
            return [self.sequence(tokenizer, a, tokenizer.encode(c)) for c in choices]
        b = tokenizer.encode(text_pair)
        if self.format == "pair":
            return [self.sequence(tokenizer, a, b)]
        return [self.sequence(tokenizer, a, b), self.sequence(tokenizer, b, a)]

    def arrays(self, examples: list[list[Row]], pad_id: int) -> dict[str, np.ndarray]:
        """int64 ``input_ids``, ``attention_mask``, ``token_type_ids``: (B, T), or (B, K, T) for
        the grouped formats (every example with the same K rows)."""
        flat = [row for rows in examples for row in rows]
        ids, mask = pad_ids([r[0] for r in flat], pad_id)
        types, _ = pad_ids([r[1] for r in flat], 0)
        out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if self.format in GROUPED:
            k = len(examples[0])
            out = {name: a.reshape(len(examples), k, a.shape[-1]) for name, a in out.items()}
        return out
