"""Adafactor (Shazeer & Stern 2018), as T5 trained with it and transformers implements it.

For a matrix the second moment is kept factored, as a row and a column average of the
squared gradient (O(n + m) memory instead of O(n·m)); vectors keep it whole. Its decay
follows the step, 1 - t^decay_rate; each update is clipped to an RMS of ``clip_threshold``.
The step size is the group's ``lr`` or, with ``relative_step``, min(1e-2, 1/sqrt(t)); with
``scale_parameter`` it is multiplied by the parameter's RMS.

Every entry of its state is a tensor (the step count too), so it checkpoints to safetensors.
"""
from __future__ import annotations

import math

import torch


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.norm(2) / (tensor.numel() ** 0.5)


class Adafactor(torch.optim.Optimizer):
    def __init__(self, groups: list[dict], options):
        defaults = {"lr": 1e-3, "weight_decay": 0.0, "eps": tuple(options.eps),
                    "clip_threshold": options.clip_threshold, "decay_rate": options.decay_rate,
                    "beta1": options.beta1, "scale_parameter": options.scale_parameter,
                    "relative_step": options.relative_step, "warmup_init": options.warmup_init}
        super().__init__(groups, defaults)

    @staticmethod
    def _step_size(group: dict, step: int, param: torch.Tensor) -> torch.Tensor | float:
        size = group["lr"]
        if group["relative_step"]:
            ceiling = 1e-6 * step if group["warmup_init"] else 1e-2
            size = min(ceiling, 1.0 / math.sqrt(step))
        if group["scale_parameter"]:
            return _rms(param).clamp(min=group["eps"][1]) * size
        return size

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        grad = p.grad.float()
        factored = grad.dim() >= 2
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            if group["beta1"] is not None:
                state["exp_avg"] = torch.zeros_like(grad)
            if factored:
                state["exp_avg_sq_row"] = grad.new_zeros(grad.shape[:-1])
                state["exp_avg_sq_col"] = grad.new_zeros(grad.shape[:-2] + grad.shape[-1:])
            else:
                state["exp_avg_sq"] = torch.zeros_like(grad)
        weights = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
        state["step"] += 1
        step = int(state["step"].item())
        lr = self._step_size(group, step, weights)
        beta2 = 1.0 - math.pow(step, group["decay_rate"])
        squared = grad * grad + group["eps"][0]
        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2).add_(squared.mean(dim=-1), alpha=1.0 - beta2)
            col.mul_(beta2).add_(squared.mean(dim=-2), alpha=1.0 - beta2)
            # the factored estimate of 1/sqrt(v): rows normalised by their mean, times columns
            row_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
            update = row_factor * col.unsqueeze(-2).rsqrt() * grad
        else:
            state["exp_avg_sq"].mul_(beta2).add_(squared, alpha=1.0 - beta2)
            update = state["exp_avg_sq"].rsqrt() * grad
        update.div_((_rms(update) / group["clip_threshold"]).clamp(min=1.0))
        update.mul_(lr)
        if group["beta1"] is not None:
            update = state["exp_avg"].mul_(group["beta1"]).add_(update, alpha=1.0 - group["beta1"])
        if group["weight_decay"] != 0:
            weights.add_(weights * (-group["weight_decay"] * lr))
        weights.add_(-update)
        if weights is not p:
            p.copy_(weights)
