"""onnxruntime sessions and the numpy helpers tasks share: no torch here."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from modkit.errors import ArtifactError, UserError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(path: Path, provider: str, *, threads: int | None = None, spin: bool = True):
    """An onnxruntime session for ``path`` on ``provider`` (``"cpu"`` or ``"cuda"``); ``threads``
    caps its intra-op threads (default: onnxruntime's, one per core). ``spin=False`` lets idle
    intra-op threads sleep instead of spinning: better where other threads share the cores."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise UserError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    name = PROVIDERS[provider]
    if name not in ort.get_available_providers():
        raise UserError(f"onnxruntime here has no {name} (available: {', '.join(ort.get_available_providers())}); "
                        "for --provider cuda install onnxruntime-gpu with a matching CUDA")
    if not path.exists():
        raise ArtifactError(f"{path}: missing; was the artifact built with [export] onnx = true?")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a provider that cannot start is reported below, not warned about
        session = ort.InferenceSession(str(path), options, providers=[name])
    if session.get_providers()[0] != name:
        # onnxruntime-gpu without the CUDA/cuDNN libraries it was built for falls back to the CPU silently
        raise UserError(f"onnxruntime could not start its {name} (it would run {path.name} on "
                        f"{session.get_providers()[0]}); check that the CUDA and cuDNN versions installed are "
                        "those this onnxruntime-gpu needs")
    return session


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, *, length: int | None = None,
            side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Pad id lists -> (input_ids, attention_mask), both int64 (B, longest row or ``length``
    if longer); ``side`` "left" puts the padding first, as decoder prompts want it."""
    width = max([len(r) for r in rows] + [length or 0])
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def greedy(step: Callable[[np.ndarray | None], np.ndarray], batch: int, *, max_new_tokens: int,
           eos_token_id: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy decoding through ``step(last tokens (B, 1), or None at first) -> logits (B, V)``
    of the next position; the step keeps its own state (a cache, a growing window).

    Returns the new tokens (B, <= max_new_tokens), rows that produced the eos padded with it
    afterwards (decoding stops once every row has), and the logits of every step. The numpy
    twin of :func:`modkit.nn.generation.generate`, which serving cannot import (torch).
    """
    done = np.zeros(batch, dtype=bool)
    token, out, all_logits = None, [], []
    for _ in range(max_new_tokens):
        logits = step(None if token is None else token[:, None].astype(np.int64))
        all_logits.append(logits)
        token = logits.argmax(-1)
        if eos_token_id is not None:
            token = np.where(done, eos_token_id, token)
            done |= token == eos_token_id
        out.append(token)
        if done.all():
            break
    return (np.stack(out, axis=1) if out else np.zeros((batch, 0), dtype=np.int64)), all_logits


def strip_after_eos(tokens: np.ndarray, eos_token_id: int | None) -> list[list[int]]:
    """Each row's tokens up to (not including) its first eos."""
    rows = []
    for row in tokens.tolist():
        rows.append(row[:row.index(eos_token_id)] if eos_token_id in row else row)
    return rows


def greedy_with_past(session, prompt: list[int], *, max_new_tokens: int,
                     eos_token_id: int | None = None) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding of one prompt over a cached step graph (see
    :class:`modkit.runtime.decoders.CachedLM`): the new tokens (stopping before the eos) and
    the logits of every step."""
    from modkit.runtime.decoders import CachedLM

    decoder, tokens = CachedLM(session, [prompt]), []
    all_logits = [decoder.start()[0]]
    for _ in range(max_new_tokens):
        token = int(all_logits[-1].argmax())
        if token == eos_token_id:
            break
        tokens.append(token)
        if len(tokens) < max_new_tokens:
            all_logits.append(decoder.step(np.array([token]))[0])
    return tokens, all_logits
