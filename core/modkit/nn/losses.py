"""Losses several objectives share."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lm_loss(backbone, hidden: torch.Tensor, input_ids: torch.Tensor,
            attention_mask: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy (GPT's L1, averaged) over real, unmasked targets, with
    ``label_smoothing`` of the targets."""
    logits = backbone.lm_logits(hidden[:, :-1])  # (B, T-1, V)
    targets = input_ids[:, 1:]
    if attention_mask is not None:
        targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100,
                           label_smoothing=label_smoothing)
