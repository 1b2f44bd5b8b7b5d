"""Several objectives in one stage: BERT's MLM + NSP, GPT's L3, TransferTransfo's LM +
next-utterance loss. Each objective draws its own batch from its own data; the stage's loss
is the weighted sum of theirs, and each one's loss is kept for the manifest."""
from __future__ import annotations

from typing import Any


class WeightedObjectives:
    """The objective interface the training loop uses (``batch``, ``loss``) over
    ``(name, objective, weight)`` parts; ``data`` is the list of the parts' data."""

    def __init__(self, parts: list[tuple[str, Any, float]]):
        self.parts = parts
        #: each part's loss at every step, for the stage report
        self.history: dict[str, list[float]] = {name: [] for name, _, _ in parts}

    def batch(self, data: list, batch_size: int, generator) -> list[dict]:
        return [obj.batch(d, batch_size, generator) for (_, obj, _), d in zip(self.parts, data)]

    def loss(self, backbone, batches: list[dict]):
        total, figures = 0.0, {}
        for (name, obj, weight), batch in zip(self.parts, batches):
            loss, own = obj.loss(backbone, batch)
            self.history[name].append(loss.item())
            total = total + weight * loss
            figures.update({f"{name}.{k}": v for k, v in own.items()})
        return total, figures
