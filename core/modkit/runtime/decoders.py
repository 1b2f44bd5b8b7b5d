"""Batches of rows being decoded over an artifact's graphs (the :class:`~modkit.runtime.generation.Decoder`s).

- :class:`CachedLM`: a decoder-only language model's cached step graph (``model_with_past.onnx``),
  prompts left-padded, each row's positions counting its real tokens only;
- :class:`RecomputeLM`: the plain graph (``model.onnx``), the whole window run again per token;
- :class:`CachedSeq2Seq`: an encoder-decoder's ``encoder.onnx`` once, then ``decoder.onnx`` per token.

No torch here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _empty_past(session, rows: int, prefix: str = "past.") -> dict[str, np.ndarray]:
    past = [i for i in session.get_inputs() if i.name.startswith(prefix)]
    heads, d_head = past[0].shape[1], past[0].shape[3]
    return {i.name: np.zeros((rows, heads, 0, d_head), np.float32) for i in past}


class CachedLM:
    """``model_with_past.onnx``: ``input_ids (B, T), attention_mask (B, P+T)[, position_ids (B, T)],
    past.{i}.key/value (B, H, P, Dh) -> logits (B, V) of the last position, present.{i}.key/value``.

    Graphs without ``position_ids`` count positions from the cache length, so rows of unequal
    prompt length cannot share a batch there (see :func:`needs_equal_lengths`)."""

    def __init__(self, session, prompts: Sequence[Sequence[int]], pad_id: int = 0):
        if needs_equal_lengths(session) and len({len(p) for p in prompts}) > 1:
            raise ValueError("this graph has no position_ids: batch prompts of one length only")
        self.session, self.prompts, self.pad_id = session, prompts, pad_id
        self.present = [o.name for o in session.get_outputs() if o.name.startswith("present.")]

    def _run(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": self.mask, **self.past}
        if not needs_equal_lengths(self.session):
            feed["position_ids"] = positions
        logits, *present = self.session.run(None, feed)
        self.past = {name.replace("present.", "past."): v for name, v in zip(self.present, present)}
        return logits

    def start(self) -> np.ndarray:
        width = max(len(p) for p in self.prompts)
        ids = np.full((len(self.prompts), width), self.pad_id, np.int64)
        self.mask = np.zeros_like(ids)
        for i, p in enumerate(self.prompts):  # left padding: every row's next token is at the end
            ids[i, width - len(p):], self.mask[i, width - len(p):] = p, 1
        positions = np.maximum(np.cumsum(self.mask, 1) - 1, 0)
        self.next_position = self.mask.sum(1, keepdims=True)
        self.past = _empty_past(self.session, len(self.prompts))
        return self._run(ids, positions)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        self.mask = np.concatenate([self.mask, np.ones((len(tokens), 1), np.int64)], 1)
        positions, self.next_position = self.next_position, self.next_position + 1
        return self._run(np.asarray(tokens, np.int64)[:, None], positions)

    def select(self, rows: np.ndarray) -> None:
        self.mask, self.next_position = self.mask[rows], self.next_position[rows]
        self.past = {k: v[rows] for k, v in self.past.items()}
        first_real = int(self.mask.argmax(1).min())  # drop padding columns no row needs any more
        if first_real:
            self.mask = self.mask[:, first_real:]
            self.past = {k: v[:, :, first_real:] for k, v in self.past.items()}


def needs_equal_lengths(session) -> bool:
    """True for cached graphs written before they took ``position_ids``."""
    return "position_ids" not in {i.name for i in session.get_inputs()}


class RecomputeLM:
    """``model.onnx`` (``input_ids, attention_mask -> logits (B, T, V)``): each step runs every
    row's last ``window`` tokens again, right-padded (so positions are right)."""

    def __init__(self, session, prompts: Sequence[Sequence[int]], window: int | None, pad_id: int = 0):
        self.session, self.window, self.pad_id = session, window, pad_id
        self.rows = [list(p) for p in prompts]

    def _run(self) -> np.ndarray:
        rows = [r[-self.window:] if self.window else r for r in self.rows]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        logits = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return logits[np.arange(len(rows)), mask.sum(1) - 1]

    def start(self) -> np.ndarray:
        return self._run()

    def step(self, tokens: np.ndarray) -> np.ndarray:
        for row, t in zip(self.rows, tokens.tolist()):
            row.append(t)
        return self._run()

    def select(self, rows: np.ndarray) -> None:
        self.rows = [list(self.rows[r]) for r in rows.tolist()]


class CachedSeq2Seq:
    """``encoder.onnx`` (``input_ids, attention_mask -> encoder_hidden_states, cross.{i}.key/value``)
    once, then ``decoder.onnx`` (``decoder_input_ids, attention_mask, past.{i}.*, cross.{i}.* ->
    logits (B, V), present.{i}.*``) per token, from the decoder start token."""

    def __init__(self, encoder, decoder, input_ids: np.ndarray, attention_mask: np.ndarray, start_id: int):
        self.encoder, self.decoder = encoder, decoder
        self.ids, self.mask, self.start_id = input_ids, attention_mask, start_id
        self.present = [o.name for o in decoder.get_outputs() if o.name.startswith("present.")]

    def _run(self, tokens: np.ndarray) -> np.ndarray:
        logits, *present = self.decoder.run(
            None, {"decoder_input_ids": tokens, "attention_mask": self.mask, **self.past, **self.cross})
        self.past = {name.replace("present.", "past."): v for name, v in zip(self.present, present)}
        return logits

    def start(self) -> np.ndarray:
        encoded = self.encoder.run(None, {"input_ids": self.ids, "attention_mask": self.mask})
        self.cross = {o.name: v for o, v in zip(self.encoder.get_outputs(), encoded) if o.name.startswith("cross.")}
        self.past = _empty_past(self.decoder, len(self.ids))
        return self._run(np.full((len(self.ids), 1), self.start_id, np.int64))

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(np.asarray(tokens, np.int64)[:, None])

    def select(self, rows: np.ndarray) -> None:
        self.mask = self.mask[rows]
        self.past = {k: v[rows] for k, v in self.past.items()}
        self.cross = {k: v[rows] for k, v in self.cross.items()}
