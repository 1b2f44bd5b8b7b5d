"""Merging PEFT methods into the base weights, checked: the merged model must compute what the
unmerged one did, within the same tolerance as the ONNX parity check."""
from __future__ import annotations

from typing import Any

import torch

from modkit.errors import ModkitError


class MergeError(ModkitError):
    """A PEFT method's merge changed what the model computes: a fault of that method."""


@torch.no_grad()
def _outputs(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    # an encoder-decoder is run teacher-forced on its own inputs: any decoder input will do
    extra = {"decoder_input_ids": ids} if getattr(model.backbone, "is_encoder_decoder", False) else {}
    out = model(ids, mask, **extra)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def merge_checked(model, methods: list[tuple[str, Any]], inputs: dict[str, torch.Tensor], *,
                  tolerance: float) -> dict[str, Any]:
    """Merge each ``(name, method)`` into ``model``; return the figures for the manifest, or
    raise :class:`MergeError` when the outputs on ``inputs`` moved by more than ``tolerance``."""
    was_training = model.training
    model.eval()
    try:
        before = _outputs(model, inputs)
        for _, method in methods:
            method.merge(model.backbone)
        after = _outputs(model, inputs)
    finally:
        model.train(was_training)
    diff = float((after.double() - before.double()).abs().max()) if before.shape == after.shape else float("inf")
    if not diff <= tolerance:
        raise MergeError(f"merging {', '.join(name for name, _ in methods)} changed the model's outputs: max abs "
                         f"difference {diff:.3g} > tolerance {tolerance:g}; the PEFT method's merge is broken")
    return {"methods": [name for name, _ in methods], "max_abs_diff": diff, "tolerance": tolerance,
            "inputs": {k: list(v.shape) for k, v in inputs.items()}}
