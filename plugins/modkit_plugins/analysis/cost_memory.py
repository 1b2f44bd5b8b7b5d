"""Memory you can plan by: what one device holds while a stage trains, under DDP and FSDP at
N devices, before any run.

- weights: 4 bytes per parameter (fp32), all of them under DDP, 1/N of them under FSDP;
- gradients: 4 bytes per trainable parameter, likewise;
- optimizer state: AdamW's two moments, 8 bytes per trainable parameter, likewise;
- activations: the bytes the forward pass of one micro-batch slice (``batch_size / N``
  sequences) keeps for the backward pass, counted exactly by running the backbone (and the
  LM head's loss, where the objective has one) on torch's meta device, which allocates
  nothing: the same under DDP and FSDP.

Not counted: the temporary buffers of one operation, the allocator's slack, and under FSDP
the one or two blocks whose full weights are gathered at a time and the build's unsharded
model (the weights once more, see docs/guide.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StageMemory:
    """One stage's inputs to the plan."""

    label: str
    parameters: int  # all of the model's, PEFT modules included
    trainable: int
    batch_size: int
    seq_len: int
    target_len: int = 0  # decoder tokens (encoder-decoders)
    lm_head: bool = True


def activation_bytes(backbone: nn.Module, sequences: int, stage: StageMemory) -> int | None:
    """Bytes saved for backward by a forward pass of ``sequences`` sequences, on the meta device
    (``backbone`` must be on it); None where the backbone does not run there."""
    kept = []
    weights = {id(p) for p in backbone.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        # a product saves its weight (or a transposed view of it): counted as weights already
        if id(t) not in weights and id(t._base) not in weights:
            kept.append(t.numel() * t.element_size())
        return t

    ids = torch.zeros(sequences, stage.seq_len, dtype=torch.long, device="meta")
    inputs = {"input_ids": ids}
    if getattr(backbone, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = torch.zeros(sequences, stage.target_len or stage.seq_len, dtype=torch.long,
                                                  device="meta")
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.enable_grad():
                hidden = backbone.train()(**inputs).last_hidden_state
                if stage.lm_head:
                    logits = backbone.lm_logits(hidden)
                    F.cross_entropy(logits.flatten(0, 1), torch.zeros(logits.shape[:2], dtype=torch.long,
                                                                      device="meta").flatten())
    except (NotImplementedError, RuntimeError):
        return None
    return sum(kept)


def device_memory(stage: StageMemory, activations: int | None, devices: int, strategy: str) -> dict[str, int | None]:
    """Bytes per device of weights, gradients, optimizer state and activations, and their sum."""
    share = (lambda n: math.ceil(n / devices)) if strategy == "fsdp" else (lambda n: n)
    figures = {"weights": 4 * share(stage.parameters), "gradients": 4 * share(stage.trainable),
               "optimizer_state": 8 * share(stage.trainable), "activations": activations}
    figures["total"] = sum(v for v in figures.values() if v is not None)
    return figures


def memory_plan(backbone: nn.Module, stages: list[StageMemory], devices: int) -> list[dict]:
    """Per stage: DDP's and FSDP's per-device bytes at ``devices`` devices."""
    plan = []
    for stage in stages:
        sequences = max(stage.batch_size // devices, 1)
        activations = activation_bytes(backbone, sequences, stage)
        plan.append({"stage": stage.label, "devices": devices, "sequences_per_device": sequences,
                     **{s: device_memory(stage, activations, devices, s) for s in ("ddp", "fsdp")}})
    return plan
