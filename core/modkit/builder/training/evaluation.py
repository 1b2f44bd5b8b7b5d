"""Evaluation during training: the held-back loss (and perplexity) and the objective's figures."""
from __future__ import annotations

import math

import torch

from modkit.builder.training.device import to_device


@torch.no_grad()
def evaluate_stage(model, objective, data, stage, engine) -> dict[str, float]:
    """``eval_loss`` (the mean of the objective's loss over up to ``stage.eval_examples``
    held-back examples, weighted by batch size), ``eval_perplexity`` = exp(eval_loss) where
    the loss is per-token cross-entropy (:attr:`~modkit.interfaces.Objective.perplexity`), and
    whatever the objective's head's ``evaluate`` reports."""
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for batch in objective.reader.eval_batches(data, stage.batch_size, stage.eval_examples):
            rows = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
            with engine.amp.autocast():
                loss, _ = objective.head.loss(model.backbone, to_device(batch, engine.device))
            total += float(loss) * rows
            count += rows
        figures: dict[str, float] = {}
        if count:
            figures["eval_loss"] = total / count
            if objective.perplexity:
                figures["eval_perplexity"] = math.exp(min(figures["eval_loss"], 50.0))
        figures.update(objective.head.evaluate(model.backbone, data))
        return figures
    finally:
        model.train(was_training)
