"""Batches of rows being decoded over an artifact's graphs (the :class:`~modkit.runtime.generation.Decoder`s).

- :class:`CachedLM`: a decoder-only language model's cached step graph (``model_with_past.onnx``),
  prompts left-padded, each row's positions counting its real tokens only;
- :class:`RecomputeLM`: the plain graph (``model.onnx``), the whole window run again per token;
- :class:`CachedSeq2Seq`: an encoder-decoder's ``encoder.onnx`` once, then ``decoder.onnx`` per token.

On a GPU (a session on onnxruntime's CUDA provider) the cached decoders run their graphs with
IO binding: the caches a step returns stay in device memory and go into the next step as they
are; only the logits come back to the host. Elsewhere the caches are numpy arrays.

No torch here.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _empty_past(session, rows: int, prefix: str = "past.") -> dict[str, np.ndarray]:
    past = [i for i in session.get_inputs() if i.name.startswith(prefix)]
    heads, d_head = past[0].shape[1], past[0].shape[3]
    return {i.name: np.zeros((rows, heads, 0, d_head), np.float32) for i in past}


def binding_device(session) -> str | None:
    """Where a session's caches live between steps: ``"cuda"`` for a session on the CUDA
    provider (IO binding), None elsewhere (numpy arrays through ``session.run``)."""
    return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else None


def run_graph(session, feed: dict[str, Any], outputs: list[str], device: str | None) -> list[Any]:
    """``session``'s ``outputs`` for ``feed`` (numpy arrays or, with a device, OrtValues
    already there). Without a device: numpy arrays, as ``session.run``. With one: the first
    output (the logits) as a numpy array, the others as OrtValues left on ``device``."""
    if device is None:
        return session.run(outputs, feed)
    binding = session.io_binding()
    for name, value in feed.items():
        if isinstance(value, np.ndarray):
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        else:
            binding.bind_ortvalue_input(name, value)
    binding.bind_output(outputs[0], "cpu")
    for name in outputs[1:]:
        binding.bind_output(name, device)
    session.run_with_iobinding(binding)
    first, *rest = binding.get_outputs()
    return [first.numpy(), *rest]


def take_rows(values: dict[str, Any], rows: np.ndarray, device: str | None, columns: slice = slice(None)) -> dict[str, Any]:
    """``values[k][rows][:, :, columns]`` for every cache: numpy arrays indexed in place; device
    caches through the host (rare: only when rows finish)."""
    if device is None:
        return {k: v[rows][:, :, columns] for k, v in values.items()}
    from onnxruntime import OrtValue

    return {k: OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[rows][:, :, columns]), device, 0)
            for k, v in values.items()}


class CachedLM:
    """``model_with_past.onnx``: ``input_ids (B, T), attention_mask (B, P+T)[, position_ids (B, T)],
    past.{i}.key/value (B, H, P, Dh) -> logits (B, V) of the last position, present.{i}.key/value``.

    Graphs without ``position_ids`` count positions from the cache length, so rows of unequal
    prompt length cannot share a batch there (see :func:`needs_equal_lengths`)."""

    def __init__(self, session, prompts: Sequence[Sequence[int]], pad_id: int = 0, *, device: str | None = "auto"):
        if needs_equal_lengths(session) and len({len(p) for p in prompts}) > 1:
            raise ValueError("this graph has no position_ids: batch prompts of one length only")
        self.session, self.prompts, self.pad_id = session, prompts, pad_id
        self.present = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
        #: where the cache stays between steps (see :func:`binding_device`; "cpu" binds on the host)
        self.device = binding_device(session) if device == "auto" else device

    def _run(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": self.mask, **self.past}
        if not needs_equal_lengths(self.session):
            feed["position_ids"] = positions
        logits, *present = run_graph(self.session, feed, ["logits", *self.present], self.device)
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
        first_real = int(self.mask.argmax(1).min())  # drop padding columns no row needs any more
        self.mask = self.mask[:, first_real:]
        self.past = take_rows(self.past, rows, self.device, slice(first_real, None))


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

    def __init__(self, encoder, decoder, input_ids: np.ndarray, attention_mask: np.ndarray, start_id: int, *,
                 device: str | None = "auto"):
        self.encoder, self.decoder = encoder, decoder
        self.ids, self.mask, self.start_id = input_ids, attention_mask, start_id
        self.present = [o.name for o in decoder.get_outputs() if o.name.startswith("present.")]
        #: where the caches (the decoder's and the source's keys/values) stay between steps
        self.device = binding_device(decoder) if device == "auto" else device

    def _run(self, tokens: np.ndarray) -> np.ndarray:
        logits, *present = run_graph(self.decoder, {"decoder_input_ids": tokens, "attention_mask": self.mask,
                                                    **self.past, **self.cross}, ["logits", *self.present], self.device)
        self.past = {name.replace("present.", "past."): v for name, v in zip(self.present, present)}
        return logits

    def start(self) -> np.ndarray:
        cross = [o.name for o in self.encoder.get_outputs() if o.name.startswith("cross.")]
        # the encoder's first output (its hidden states) is not needed here; it comes back to the host
        first = self.encoder.get_outputs()[0].name
        encoded = run_graph(self.encoder, {"input_ids": self.ids, "attention_mask": self.mask}, [first, *cross],
                            self.device)
        self.cross = dict(zip(cross, encoded[1:]))
        self.past = _empty_past(self.decoder, len(self.ids))
        return self._run(np.full((len(self.ids), 1), self.start_id, np.int64))

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(np.asarray(tokens, np.int64)[:, None])

    def select(self, rows: np.ndarray) -> None:
        self.mask = self.mask[rows]
        self.past = take_rows(self.past, rows, self.device)
        self.cross = take_rows(self.cross, rows, self.device)
