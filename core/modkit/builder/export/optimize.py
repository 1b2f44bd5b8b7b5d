"""Optimising and quantising exported ONNX graphs with onnxruntime's own tools.

- ``basic``: onnxruntime's basic graph rewrites (constant folding, redundant nodes), saved;
- ``transformer``: onnxruntime's transformer optimizer (``onnxruntime.transformers``, its
  ``bert`` fusions): layer norms, residual adds + layer norms (SkipLayerNormalization), GELUs
  (BiasGelu, FastGelu) and bidirectional self-attention (one ``Attention`` node for the
  q/k/v projections, scores, mask and softmax) fused into single kernels. Attention fuses
  where modkit's export matches the subgraph the optimizer looks for: scaled dot-product
  attention with biased projections and a padding-only mask in Hugging Face's form (see
  :func:`modkit.nn.blocks.attention_bias`) -- BERT, BART's encoder. Causal attention (GPT,
  decoders) and T5's (no projection biases, relative position bias) stay as MatMul/Softmax
  nodes: the optimizer's GPT-2 and T5 fusions look for Hugging Face's own graphs of those
  models (a packed q/k/v projection, T5's bucket computation), which modkit's are not.

The graphs keep their inputs and outputs, so the runtime runs them unchanged.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from modkit.errors import ModkitError
from modkit.fileio import atomic_path
from modkit.runtime.artifact import graph_file

LEVELS = ("none", "basic", "transformer")
#: what ``optimize = "auto"`` tries, fastest first; the build keeps the first that passes parity
AUTO = ("transformer", "basic", "none")


class OptimizeError(ModkitError):
    """An optimiser failed on a graph (``optimize = "auto"`` then tries the next level)."""


def optimize_graph(path: Path, level: str) -> dict[str, Any]:
    """Rewrite the ONNX file ``path`` in place at ``level``; the fused operators, counted."""
    if level == "none":
        return {}
    tmp = path.with_name(path.name + ".opt.tmp")
    try:
        if level == "basic":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            options.optimized_model_filepath = str(tmp)
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            fused = {}
        elif level == "transformer":
            fused = _fuse(path, tmp)
        else:
            raise ValueError(f"unknown optimisation level {level!r}; expected one of {LEVELS}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return fused


def _fuse(path: Path, out: Path) -> dict[str, int]:
    """onnxruntime's transformer optimizer on ``path``, written to ``out``; the fused operators."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # the attention mask as it is (2D, 1 = real token): bert's default index form assumes
    # right padding, and modkit's generation pads on the left
    options.use_raw_attention_mask(True)
    try:
        # num_heads/hidden_size 0: read from each attention's reshape (they matter to attention only)
        model = optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
                               optimization_options=options)
        model.save_model_to_file(str(out))
    except Exception as e:  # the optimizer's own failure on a graph it does not expect
        raise OptimizeError(f"{path.name}: onnxruntime's transformer optimizer failed: {type(e).__name__}: {e}") from e
    return {k: v for k, v in model.get_fused_operator_statistics().items() if v}


def fused_operators(path: Path) -> dict[str, int]:
    """How many nodes of each fused (onnxruntime contrib or LayerNormalization) kind the graph has."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.domain == "com.microsoft" or node.op_type == "LayerNormalization":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize_graph(path: Path) -> Path:
    """Write the dynamically quantised (int8 weights, activations quantised per call) twin of
    ``path`` beside it and return its path. Matrix multiplications by weights and fused attention
    (QAttention: its q/k/v projection) are quantised, per output channel; embedding lookups stay
    fp32 (quantising them costs accuracy for little speed)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(graph_file(path.name, "int8"))
    tmp = out.with_name(out.name + ".tmp")
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # its advice to pre-process is for static quantisation
    try:
        # shape inference does not know the fused contrib ops' output types: they are float
        # a scale per output channel: MiniLM's hidden states at cosine 0.989 to fp32 instead of
        # 0.943, at the same speed; products of two activations (attention scores) stay fp32
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention"],
                         per_channel=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT,
                                                          "MatMulConstBOnly": True})
        os.replace(tmp, out)
    finally:
        root.level = level
        tmp.unlink(missing_ok=True)
    return out


def half_graph(path: Path) -> Path:
    """Write the fp16 twin of ``path`` beside it (for GPUs) and return its path: weights and
    activations in float16, the graph's inputs and outputs as they were (casts at its edges),
    so the runtime feeds and reads the same arrays at either precision."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    out = path.with_name(graph_file(path.name, "fp16"))
    model = OnnxModel(onnx.load(str(path)))
    model.convert_float_to_float16(keep_io_types=True)
    with atomic_path(out) as tmp:
        model.save_model_to_file(str(tmp))
    return out
