"""torch's Adam, AdamW and SGD as modkit optimizers."""
from __future__ import annotations

import torch


def adam(groups: list[dict], options) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, betas=options.betas, eps=options.eps, amsgrad=options.amsgrad)


def adamw(groups: list[dict], options) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, betas=options.betas, eps=options.eps, amsgrad=options.amsgrad)


def sgd(groups: list[dict], options) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, momentum=options.momentum, dampening=options.dampening,
                           nesterov=options.nesterov)
