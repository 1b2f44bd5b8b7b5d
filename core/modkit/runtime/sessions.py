"""onnxruntime sessions and the numpy helpers tasks share: no torch here."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from modkit.errors import ArtifactError, UserError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(path: Path, provider: str, *, threads: int | None = None):
    """An onnxruntime session for ``path`` on ``provider`` (``"cpu"`` or ``"cuda"``); ``threads``
    caps its intra-op threads (default: onnxruntime's, one per core)."""
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
    return ort.InferenceSession(str(path), options, providers=[name])


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists -> (input_ids, attention_mask), both int64 (B, longest row)."""
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


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
