"""Several objectives in one stage: BERT's MLM + NSP, GPT's L3, TransferTransfo's LM +
next-utterance loss. Each objective draws its own batch from its own data; the stage's loss
is the weighted sum of theirs, and each one's loss is kept for the manifest."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightedObjectives(nn.Module):
    """A stage's objectives as one module over ``(name, objective, weight)`` parts, so that the
    module DDP and torch.compile wrap holds every objective's head (DDP averages only the
    gradients of the parameters it was given). ``batch`` draws one batch per objective (by its
    reader), from the list of the parts' data; ``forward`` is the weighted sum of their losses."""

    def __init__(self, parts: list[tuple[str, Any, float]]):
        super().__init__()
        self.names = [name for name, _, _ in parts]
        self.parts = nn.ModuleList(objective.head for _, objective, _ in parts)
        self.readers = [objective.reader for _, objective, _ in parts]
        self.weights = [float(weight) for _, _, weight in parts]

    def batch(self, data: list, batch_size: int, generator) -> list[dict]:
        return [reader.batch(d, batch_size, generator) for reader, d in zip(self.readers, data)]

    def forward(self, backbone: nn.Module, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the weighted sum to train on, each objective's own loss, detached). The own losses
        stay on the device: the training loop reads them once a step with the total, rather
        than syncing (and breaking a compiled graph) per objective and micro-batch."""
        total, each = None, []
        for obj, weight, batch in zip(self.parts, self.weights, batches):
            loss = obj.loss(backbone, batch)[0]
            total = weight * loss if total is None else total + weight * loss
            each.append(loss.detach().float())
        return total, torch.stack(each)
