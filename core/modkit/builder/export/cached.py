"""A cached decoder step for decoder-only language models, so `modkit run` generates in O(n).

``model_with_past.onnx``: ``input_ids (B, T), attention_mask (B, P+T)[, position_ids (B, T)],
past.{i}.key/value (B, H, P, Dh) -> logits (B, V) of the last position, present.{i}.key/value
(B, H, P+T, Dh)``. The first step passes a past of length 0. When the backbone declares
``position_ids`` (:class:`~modkit.interfaces.BackboneCapabilities`) the graph takes them too,
so left-padded prompts of different lengths share a batch (each row counts its own real
tokens); otherwise positions run from P. The backbone must meet
:class:`modkit.interfaces.CachedDecoder`: its cache is one ``((keys, values), None)`` per layer,
as the core :class:`~modkit.nn.blocks.Block` returns, but any layers may produce it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modkit.builder.export.onnx import ParityError, onnx_export
from modkit.interfaces import capabilities_of
from modkit.nn.generation import generate
from modkit.runtime import greedy_with_past, make_session

FILE = "model_with_past.onnx"


class CachedStep(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *rest: torch.Tensor):
        positions, past = (rest[0], rest[1:]) if takes_positions(self.backbone) else (None, rest)
        cache = [((past[i], past[i + 1]), None) for i in range(0, len(past), 2)]
        extra = {"position_ids": positions} if positions is not None else {}
        out = self.backbone(input_ids, attention_mask, past_key_values=cache, use_cache=True, **extra)
        presents = [t for self_kv, _ in out.past_key_values for t in self_kv]
        return (self.backbone.lm_logits(out.last_hidden_state[:, -1]), *presents)


def takes_positions(backbone: nn.Module) -> bool:
    return capabilities_of(backbone).takes("position_ids")


def export_with_past(backbone: nn.Module, folder: Path, *, opset: int = 17, optimize: str = "none") -> Path:
    """Trace one step with a non-empty past (so no shape is frozen), write the graph and
    optimise it at level ``optimize``."""
    backbone.eval()
    with torch.no_grad():
        ids = torch.zeros((1, 2), dtype=torch.long)
        past = [t for self_kv, _ in backbone(ids, use_cache=True).past_key_values for t in self_kv]
    n = len(past) // 2
    past_names = [f"past.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    step = torch.ones((1, 1), dtype=torch.long)
    positions = [torch.full((1, 1), 2)] if takes_positions(backbone) else []
    return onnx_export(
        CachedStep(backbone), (step, torch.ones((1, 3), dtype=torch.long), *positions, *past), folder / FILE,
        input_names=["input_ids", "attention_mask", *(["position_ids"] if positions else []), *past_names],
        output_names=["logits", *present_names], opset=opset, optimize=optimize,
        dynamic_axes={"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
                      "position_ids": {0: "batch", 1: "new"},
                      "logits": {0: "batch"}, **{k: {0: "batch", 2: "past"} for k in past_names},
                      **{k: {0: "batch", 2: "total"} for k in present_names}})


def check_with_past(backbone: nn.Module, path: Path, prompt: list[int], *, max_new_tokens: int,
                    tolerance: float) -> dict[str, Any]:
    """Greedy tokens from the ONNX step loop must equal torch's; logits within ``tolerance``."""
    def step(tokens, cache):
        seen = 0 if cache is None else cache[0][0][0].shape[2]
        mask = torch.ones((tokens.shape[0], seen + tokens.shape[1]), dtype=torch.long)
        out = backbone(tokens, mask, past_key_values=cache, use_cache=True)
        return backbone.lm_logits(out.last_hidden_state[:, -1]), out.past_key_values

    with torch.no_grad():
        expected = generate(step, torch.tensor([prompt]), max_new_tokens=max_new_tokens)[0].tolist()
        tokens, logits = greedy_with_past(make_session(path, "cpu"), prompt, max_new_tokens=max_new_tokens)
        seq = torch.tensor([prompt + tokens])
        reference = backbone.lm_logits(backbone(seq).last_hidden_state)[0, len(prompt) - 1: -1].numpy()
    diff = float(np.abs(np.stack(logits)[: len(reference)] - reference[: len(logits)]).max())
    if tokens != expected or not diff <= tolerance:
        raise ParityError(f"{path.name}: cached ONNX generation differs from torch (tokens equal: "
                          f"{tokens == expected}, max abs logit difference {diff:.3g} > {tolerance:g})")
    return {"with_past_greedy_tokens_equal": True, "with_past_logits_max_abs_diff": diff,
            "with_past_steps": len(tokens)}
