"""How far the int8 graphs are from the fp32 ones on held-back inputs (recorded in the manifest).

Logits graphs: top-1 agreement (the label for a classifier, the next token for a language
model) at every real position, and the largest difference of the outputs. Generating graphs:
the greedy tokens of the int8 graphs against the fp32 graphs' (exact match and the share of
positions that agree). Runs on onnxruntime alone, both precisions the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modkit.runtime.artifact import graph_file
from modkit.runtime import make_session
from modkit.runtime.decoders import CachedLM, CachedSeq2Seq
from modkit.runtime.generation import generate


def _size(path: Path) -> dict[str, int]:
    return {"fp32_bytes": path.stat().st_size, "int8_bytes": path.with_name(graph_file(path.name, "int8")).stat().st_size}


def _sessions(path: Path):
    return make_session(path, "cpu"), make_session(path.with_name(graph_file(path.name, "int8")), "cpu")


def compare_logits(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    fp32, int8 = (s.run(["logits"], {i.name: inputs[i.name] for i in s.get_inputs()})[0] for s in _sessions(path))
    if fp32.ndim == 3:  # per position: the real ones only
        keep = inputs["attention_mask"].astype(bool)
        fp32, int8 = fp32[keep], int8[keep]
    return {**_size(path), "top1_agreement": float((fp32.argmax(-1) == int8.argmax(-1)).mean()),
            "positions": int(len(fp32)), "max_abs_diff": float(np.abs(fp32 - int8).max())}


def _agreement(expected: list[list[int]], got: list[list[int]]) -> dict[str, Any]:
    pairs = [(a, b) for e, g in zip(expected, got) for a, b in zip(e + [-1] * (len(g) - len(e)), g + [-1] * (len(e) - len(g)))]
    return {"greedy_exact_match": float(np.mean([e == g for e, g in zip(expected, got)])),
            "token_agreement": float(np.mean([a == b for a, b in pairs])) if pairs else 1.0}


def compare_cached_lm(path: Path, prompts: list[list[int]], max_new_tokens: int) -> dict[str, Any]:
    rows = [generate(CachedLM(s, prompts), len(prompts), max_new_tokens=max_new_tokens) for s in _sessions(path)]
    return {**_size(path), **_agreement(*rows)}


def compare_seq2seq(encoder: Path, decoder: Path, ids: np.ndarray, mask: np.ndarray, *, start_id: int,
                    eos_token_id: int | None, max_new_tokens: int) -> dict[str, Any]:
    rows = []
    for enc, dec in zip(_sessions(encoder), _sessions(decoder)):
        rows.append(generate(CachedSeq2Seq(enc, dec, ids, mask, start_id), len(ids), max_new_tokens=max_new_tokens,
                             eos_token_id=eos_token_id))
    return {"encoder": _size(encoder), "decoder": _size(decoder), **_agreement(*rows)}
