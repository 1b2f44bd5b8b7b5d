"""The int8 and fp16 twins of an artifact's graphs: written beside the fp32 ones, and how far
they are from fp32 on held-back inputs (recorded in the manifest, ``parity.int8`` / ``parity.fp16``).

Logits graphs: top-1 agreement (the label for a classifier, the next token for a language
model) at every real position, and the largest difference of the outputs. Generating graphs:
the greedy tokens of the twin graphs against the fp32 graphs' (exact match and the share of
positions that agree). Runs on onnxruntime's CPU provider alone, both precisions the same way
(fp16 graphs are meant for GPUs; the CPU runs them too, slowly, which is enough for the check).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modkit.builder.export.optimize import half_graph, quantize_graph
from modkit.runtime import make_session
from modkit.runtime.artifact import graph_file
from modkit.runtime.decoders import CachedLM, CachedSeq2Seq
from modkit.runtime.generation import generate

WRITERS = {"int8": quantize_graph, "fp16": half_graph}


def write_and_check(graphs: list[Path], precision: str, task: dict[str, Any], inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write each graph's ``precision`` twin; how far its outputs are from fp32 on ``inputs``
    (the parity check's held-back inputs), for the graphs whose inputs modkit knows: the
    logits, cached-step and seq2seq graphs."""
    for path in graphs:
        WRITERS[precision](path)
    folder, figures = graphs[0].parent, {}
    names = {p.name for p in graphs}
    if "model.onnx" in names:
        figures["model.onnx"] = compare_logits(folder / "model.onnx", inputs, precision)
    if "model_with_past.onnx" in names:
        figures["model_with_past.onnx"] = compare_cached_lm(folder / "model_with_past.onnx", held_back_prompts(inputs),
                                                            16, precision)
    if {"encoder.onnx", "decoder.onnx"} <= names:
        figures["encoder.onnx+decoder.onnx"] = compare_seq2seq(
            folder / "encoder.onnx", folder / "decoder.onnx", inputs["input_ids"], inputs["attention_mask"],
            start_id=task["decoder_start_token_id"], eos_token_id=task.get("eos_token_id"),
            max_new_tokens=task.get("max_new_tokens", 16), precision=precision)
    return figures


def _size(path: Path, precision: str) -> dict[str, int]:
    twin = path.with_name(graph_file(path.name, precision))
    return {"fp32_bytes": path.stat().st_size, f"{precision}_bytes": twin.stat().st_size}


def _sessions(path: Path, precision: str):
    return make_session(path, "cpu"), make_session(path.with_name(graph_file(path.name, precision)), "cpu")


def compare_logits(path: Path, inputs: dict[str, np.ndarray], precision: str = "int8") -> dict[str, Any]:
    fp32, twin = (s.run(["logits"], {i.name: inputs[i.name] for i in s.get_inputs()})[0].astype(np.float32)
                  for s in _sessions(path, precision))
    if fp32.ndim == 3:  # per position: the real ones only
        keep = inputs["attention_mask"].astype(bool)
        fp32, twin = fp32[keep], twin[keep]
    return {**_size(path, precision), "top1_agreement": float((fp32.argmax(-1) == twin.argmax(-1)).mean()),
            "positions": int(len(fp32)), "max_abs_diff": float(np.abs(fp32 - twin).max())}


def compare_accuracy(path: Path, inputs: dict[str, np.ndarray], gold: np.ndarray, precision: str,
                     rows: int = 64) -> dict[str, Any]:
    """Classification accuracy of the fp32 graph and of its ``precision`` twin on held-back
    ``inputs`` (``rows`` at a time) against the ``gold`` class ids, and the change in points."""
    accuracy = []
    for session in _sessions(path, precision):
        names = [i.name for i in session.get_inputs()]
        predicted = np.concatenate([session.run(["logits"], {k: inputs[k][i:i + rows] for k in names})[0].argmax(-1)
                                    for i in range(0, len(gold), rows)])
        accuracy.append(float((predicted == gold).mean()))
    return {"heldout_examples": int(len(gold)), "heldout_accuracy_fp32": accuracy[0],
            f"heldout_accuracy_{precision}": accuracy[1], "accuracy_change_points": 100 * (accuracy[1] - accuracy[0])}


def _agreement(expected: list[list[int]], got: list[list[int]]) -> dict[str, Any]:
    pairs = [(a, b) for e, g in zip(expected, got) for a, b in zip(e + [-1] * (len(g) - len(e)), g + [-1] * (len(e) - len(g)))]
    return {"greedy_exact_match": float(np.mean([e == g for e, g in zip(expected, got)])),
            "token_agreement": float(np.mean([a == b for a, b in pairs])) if pairs else 1.0}


def held_back_prompts(inputs: dict[str, np.ndarray], length: int = 8, every: int = 16, most: int = 16) -> list[list[int]]:
    """Prompts of ``length`` tokens starting every ``every`` real tokens of each held-back row
    (at most ``most``): more generations to compare than rows."""
    prompts = []
    for row, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
        real = row[mask.astype(bool)].tolist()
        prompts += [real[i:i + length] for i in range(0, max(len(real) - length, 0) + 1, every)]
    return [p for p in prompts if p][:most]


def compare_cached_lm(path: Path, prompts: list[list[int]], max_new_tokens: int, precision: str = "int8") -> dict[str, Any]:
    rows = [generate(CachedLM(s, prompts), len(prompts), max_new_tokens=max_new_tokens)
            for s in _sessions(path, precision)]
    return {**_size(path, precision), "prompts": len(prompts), **_agreement(*rows)}


def compare_seq2seq(encoder: Path, decoder: Path, ids: np.ndarray, mask: np.ndarray, *, start_id: int,
                    eos_token_id: int | None, max_new_tokens: int, precision: str = "int8") -> dict[str, Any]:
    rows = []
    for enc, dec in zip(_sessions(encoder, precision), _sessions(decoder, precision)):
        rows.append(generate(CachedSeq2Seq(enc, dec, ids, mask, start_id), len(ids), max_new_tokens=max_new_tokens,
                             eos_token_id=eos_token_id))
    return {"encoder": _size(encoder, precision), "decoder": _size(decoder, precision), **_agreement(*rows)}
