"""ONNX export of a merged model and the parity check against torch."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from modkit.errors import ModkitError
from modkit.nn.model import ExportGraph, ModkitModel
from modkit.runtime import make_session

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _inputs(example: dict) -> list[str]:
    """The graph's inputs: ids and mask, and segment ids where the example has them."""
    return [k for k in INPUTS if k in example]


class ParityError(ModkitError):
    """The ONNX graph does not compute what the torch model does."""


def export_onnx(model: ModkitModel, example: dict[str, torch.Tensor], path: Path, *, opset: int = 17) -> None:
    """Write ``(input_ids, attention_mask) -> logits`` with dynamic batch and sequence axes."""
    graph = ExportGraph(model).eval()
    names = _inputs(example)
    axes = {**{k: {0: "batch", 1: "sequence"} for k in names}, "logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        if graph(*(example[k] for k in names)).dim() == 3:  # per-position outputs (LM, fill-mask, tags)
            axes["logits"][1] = "sequence"
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        # The TorchScript exporter: fast (well under a second here) and exact for these graphs.
        torch.onnx.export(graph, tuple(example[k] for k in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False)


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
    if diff.ndim == 3:  # per-position outputs: padded positions are not compared
        diff = diff[inputs["attention_mask"].numpy().astype(bool)]
    max_diff = float(diff.max()) if diff.size else 0.0
    figures = {"max_abs_diff": max_diff, "tolerance": tolerance,
               "inputs": {k: list(inputs[k].shape) for k in _inputs(inputs)}}
    if not max_diff <= tolerance:
        raise ParityError(f"ONNX parity check failed: max abs difference {max_diff:.3g} > {tolerance:g} "
                          f"between onnxruntime and torch on {path.name}")
    return figures
