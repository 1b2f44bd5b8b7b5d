"""Greedy seq2seq generation with onnxruntime over ``encoder.onnx`` + ``decoder.onnx``.

No torch here: a deployment runs this with numpy and onnxruntime only. The graphs are the
ones :mod:`modkit.builder.export.seq2seq` writes:

- encoder: ``input_ids, attention_mask -> encoder_hidden_states, cross.{i}.key, cross.{i}.value``
  (each decoder layer's cross-attention keys/values, computed once);
- decoder: ``decoder_input_ids, attention_mask, past.{i}.key/value, cross.{i}.key/value ->
  logits (of the last position), present.{i}.key/value``; the first step passes a past of
  length 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from modkit.runtime.sessions import greedy, strip_after_eos


class Seq2SeqSession:
    """The two onnxruntime sessions of an encoder-decoder artifact."""

    def __init__(self, encoder, decoder):
        """``encoder``/``decoder``: onnxruntime sessions (see :func:`modkit.runtime.make_session`)."""
        self.encoder, self.decoder = encoder, decoder
        self.past_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past.")]
        self.present_names = [o.name for o in self.decoder.get_outputs() if o.name.startswith("present.")]
        past_input = next(i for i in self.decoder.get_inputs() if i.name.startswith("past."))
        self.n_heads, self.d_head = past_input.shape[1], past_input.shape[3]

    def greedy(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        max_new_tokens: int,
        decoder_start_token_id: int,
        eos_token_id: int | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """New tokens (B, <= max_new_tokens; rows that finished are padded with the eos) and
        the logits (B, V) of every step."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        encoded = self.encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        cross = {o.name: v for o, v in zip(self.encoder.get_outputs(), encoded) if o.name.startswith("cross.")}
        batch = input_ids.shape[0]
        empty = np.zeros((batch, self.n_heads, 0, self.d_head), dtype=np.float32)
        past = {name: empty for name in self.past_names}

        def step(token):
            nonlocal past
            feed = np.full((batch, 1), decoder_start_token_id, dtype=np.int64) if token is None else token
            logits, *present = self.decoder.run(
                None, {"decoder_input_ids": feed, "attention_mask": attention_mask, **past, **cross})
            past = dict(zip(self.past_names, present))
            return logits

        return greedy(step, batch, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)


def generate_onnx(
    encoder_path: str | Path,
    decoder_path: str | Path,
    input_ids: Sequence[Sequence[int]] | np.ndarray,
    attention_mask: Sequence[Sequence[int]] | np.ndarray,
    max_new_tokens: int,
    decoder_start_token_id: int,
    eos_token_id: int | None,
    provider: str = "cpu",
) -> list[list[int]]:
    """Greedy generation from an exported encoder-decoder; each row's new tokens before eos."""
    from modkit.runtime import make_session

    session = Seq2SeqSession(make_session(Path(encoder_path), provider), make_session(Path(decoder_path), provider))
    tokens, _ = session.greedy(np.asarray(input_ids), np.asarray(attention_mask),
                               max_new_tokens=max_new_tokens,
                               decoder_start_token_id=decoder_start_token_id, eos_token_id=eos_token_id)
    return strip_after_eos(tokens, eos_token_id)
