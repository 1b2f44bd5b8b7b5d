"""ONNX export: the one call into ``torch.onnx``, the default task graph and its parity check."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from modkit.builder.export.optimize import optimize_graph
from modkit.errors import ModkitError
from modkit.fileio import atomic_path
from modkit.nn.model import ExportGraph, ModkitModel
from modkit.runtime import make_session

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _inputs(example: dict) -> list[str]:
    """The graph's inputs: ids and mask, and segment ids where the example has them."""
    return [k for k in INPUTS if k in example]


class ParityError(ModkitError):
    """The ONNX graph does not compute what the torch model does."""


def onnx_export(module: torch.nn.Module, args: Sequence[torch.Tensor], path: Path, *, input_names: list[str],
                output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int,
                optimize: str = "none") -> Path:
    """Trace ``module`` on ``args`` in eval mode and write the graph to ``path`` atomically,
    optimised at level ``optimize`` (:mod:`modkit.builder.export.optimize`); every submodule's mode is
    as before afterwards.

    Every graph modkit writes goes through here. The TorchScript exporter (``dynamo=False``)
    is chosen on purpose: well under a second for these graphs, and exact.
    """
    modes = {m: m.training for m in module.modules()}  # a fresh wrapper is in training mode
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), atomic_path(Path(path)) as tmp:
            # the exporter's deprecation notices, and tracer warnings about shape tests whose
            # traced branch is right for every dynamic size (e.g. the causal-mask path)
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(args), str(tmp), input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    finally:
        for m, training in modes.items():
            m.training = training
    optimize_graph(Path(path), optimize)
    return Path(path)


def export_onnx(model: ModkitModel, example: dict[str, torch.Tensor], path: Path, *, opset: int = 17,
                optimize: str = "none") -> Path:
    """Write ``(input_ids, attention_mask) -> logits`` with dynamic batch and sequence axes.

    Logits with a per-position axis (``(B, T, ...)``, as a language model's) get a dynamic
    sequence axis too; any other shape keeps only the batch axis dynamic. Grouped inputs
    (B, K, T) have K dynamic too, and so do logits with one value per group (B, K).
    """
    graph = ExportGraph(model).eval()
    names = _inputs(example)
    args = tuple(example[k] for k in names)
    with torch.no_grad():
        logits = graph(*args)
    grouped = args[0].ndim == 3  # (B, K, T): K sequences per example (multiple choice)
    axes = {**{k: {0: "batch", 1: "group", 2: "sequence"} if grouped else {0: "batch", 1: "sequence"}
               for k in names}, "logits": {0: "batch"}}
    if logits.ndim >= 2 and logits.shape[1] == args[0].shape[1]:
        axes["logits"][1] = "group" if grouped else "sequence"
    return onnx_export(graph, args, path, input_names=names, output_names=["logits"], dynamic_axes=axes,
                       opset=opset, optimize=optimize)


def check_parity(model: ModkitModel, path: Path, inputs: dict[str, torch.Tensor], *,
                 tolerance: float) -> dict:
    """Run the graph in onnxruntime and the model in torch on the same inputs.

    Compares outputs at real (unpadded) positions; raises ParityError past ``tolerance``.
    """
    model.eval()
    with torch.no_grad():
        expected = ExportGraph(model)(*(inputs[k] for k in _inputs(inputs))).float().numpy()
    got = make_session(path, "cpu").run(["logits"], {k: inputs[k].numpy() for k in _inputs(inputs)})[0]
    if got.shape != expected.shape:
        raise ParityError(f"{path}: ONNX output shape {got.shape} != torch {expected.shape}")
    diff = np.abs(got - expected)
    if diff.ndim >= 3 and diff.shape[1] == inputs["attention_mask"].shape[1]:
        diff = diff[inputs["attention_mask"].numpy().astype(bool)]  # padded positions are not compared
    max_diff = float(diff.max()) if diff.size else 0.0
    figures = {"max_abs_diff": max_diff, "tolerance": tolerance,
               "inputs": {k: list(inputs[k].shape) for k in _inputs(inputs)}}
    if not max_diff <= tolerance:
        raise ParityError(f"ONNX parity check failed: max abs difference {max_diff:.3g} > {tolerance:g} "
                          f"between onnxruntime and torch on {path.name}")
    return figures
