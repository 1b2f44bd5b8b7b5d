"""ONNX export of a merged model and the parity check against torch."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from modkit.errors import ModkitError
from modkit.builder.optimize import optimize_graph
from modkit.nn.model import ExportGraph, ModkitModel
from modkit.runtime import make_session

INPUTS = ("input_ids", "attention_mask")


class ParityError(ModkitError):
    """The ONNX graph does not compute what the torch model does."""


def export_onnx(model: ModkitModel, example: dict[str, torch.Tensor], path: Path, *, opset: int = 17,
                optimize: str = "none") -> None:
    """Write ``(input_ids, attention_mask) -> logits`` with dynamic batch and sequence axes,
    optimised at level ``optimize`` (see :mod:`modkit.builder.optimize`)."""
    graph = ExportGraph(model).eval()
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    if model.head is not None and getattr(model.head, "task", "") == "generate":
        axes["logits"][1] = "sequence"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        # The TorchScript exporter: fast (well under a second here) and exact for these graphs.
        torch.onnx.export(graph, tuple(example[k] for k in INPUTS), str(path), input_names=list(INPUTS),
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    optimize_graph(path, optimize)


def check_parity(model: ModkitModel, path: Path, inputs: dict[str, torch.Tensor], *,
                 tolerance: float) -> dict:
    """Run the graph in onnxruntime and the model in torch on the same inputs.

    Compares outputs at real (unpadded) positions; raises ParityError past ``tolerance``.
    """
    model.eval()
    with torch.no_grad():
        expected = model(inputs["input_ids"], inputs["attention_mask"]).logits.float().numpy()
    got = make_session(path, "cpu").run(["logits"], {k: inputs[k].numpy() for k in INPUTS})[0]
    if got.shape != expected.shape:
        raise ParityError(f"{path}: ONNX output shape {got.shape} != torch {expected.shape}")
    diff = np.abs(got - expected)
    if diff.ndim == 3:  # per-position outputs: padded positions are not compared
        diff = diff[inputs["attention_mask"].numpy().astype(bool)]
    max_diff = float(diff.max()) if diff.size else 0.0
    figures = {"max_abs_diff": max_diff, "tolerance": tolerance,
               "inputs": {k: list(inputs[k].shape) for k in INPUTS}}
    if not max_diff <= tolerance:
        raise ParityError(f"ONNX parity check failed: max abs difference {max_diff:.3g} > {tolerance:g} "
                          f"between onnxruntime and torch on {path.name}")
    return figures
