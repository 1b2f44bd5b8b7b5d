"""Lion, "Symbolic Discovery of Optimization Algorithms" (Chen et al. 2023), Algorithm 2:

    c = β1·m + (1 - β1)·g          the update's direction: every coordinate moves by ±lr
    θ ← θ - lr·(sign(c) + λ·θ)     decoupled weight decay λ
    m ← β2·m + (1 - β2)·g          the momentum, with its own, slower decay

One state tensor per parameter (the momentum), half of Adam's.
"""
from __future__ import annotations

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, groups: list[dict], options):
        super().__init__(groups, {"lr": 1e-4, "weight_decay": 0.0, "betas": tuple(options.betas)})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:  # a head sitting out this stage: no step, no decay
                    continue
                momentum = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                direction = momentum.mul(beta1).add_(p.grad, alpha=1 - beta1).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(direction, alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss
