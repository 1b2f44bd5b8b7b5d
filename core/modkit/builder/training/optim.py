"""A stage's optimizer and learning-rate schedule, made from the components its spec names.

The stage's trainable parameters are split into groups by two rules of the optimizer's
options: matrices and embeddings decay by the stage's ``weight_decay`` and 1-D parameters
(biases, norm weights) do not, unless ``decay_biases_and_norms``; and ``lr_multipliers``
scales the lr of the parameters whose names match a glob. Each group keeps its multiplier
as ``lr_scale``, so a restored optimizer knows it too.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from modkit.errors import UserError
from modkit.registry import get_registry
from modkit.spec import Resolved, Spec, resolve_default


def _multiplier(name: str, multipliers: dict[str, float]) -> float:
    return next((m for pattern, m in multipliers.items() if fnmatch.fnmatchcase(name, pattern)), 1.0)


def param_groups(model: nn.Module, options, lr: float, weight_decay: float) -> list[dict]:
    """The trainable parameters of ``model`` in groups: per lr multiplier (1 first, then in the
    order the patterns are given), decaying parameters before the others."""
    scales = [1.0] + [m for m in options.lr_multipliers.values() if m != 1.0]
    groups = {(scale, decays): [] for scale in dict.fromkeys(scales) for decays in (True, False)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decays = p.dim() >= 2 or options.decay_biases_and_norms
            groups[(_multiplier(name, options.lr_multipliers), decays)].append(p)
    return [{"params": params, "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay if decays else 0.0}
            for (scale, decays), params in groups.items() if params or scale == 1.0]


@dataclass
class StageOptimizer:
    """The optimizer of one stage and the lr its schedule gives each step."""

    optimizer: torch.optim.Optimizer
    lr_of: Callable[[int], float]  # the peak lr times the schedule, at optimizer step n (from 0)

    def set_lr(self, step: int) -> float:
        """Give every group its lr for ``step``; return the stage's (multiplier 1)."""
        lr = self.lr_of(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        return lr


def schedule_of(schedule: Resolved, stage) -> Callable[[int], float]:
    """``lr_of(n)``: the stage's lr at optimizer step n under ``schedule``."""
    options = schedule.options
    if options.warmup_ratio is not None:  # as transformers rounds it
        options = options.model_copy(update={"warmup_steps": math.ceil(options.warmup_ratio * stage.steps)})
    elif options.warmup_steps is None:  # the stage's warmup_steps is the schedule's default
        options = options.model_copy(update={"warmup_steps": stage.warmup_steps})
    factor = schedule.component.load()(options, stage.steps, stage.lr)
    return lambda step: stage.lr * factor(step)


def stage_optimizer(model: nn.Module, stage, optimizer: Resolved | None = None,
                    schedule: Resolved | None = None) -> StageOptimizer:
    """The optimizer over ``model``'s trainable parameters, and the schedule (the stage's
    defaults where none is given)."""
    optimizer = optimizer or resolve_default(get_registry(), "optimizer")
    schedule = schedule or resolve_default(get_registry(), "schedule")
    groups = param_groups(model, optimizer.options, stage.lr, stage.weight_decay)
    return StageOptimizer(optimizer.component.load()(groups, optimizer.options), schedule_of(schedule, stage))


def check_schedules(spec: Spec) -> None:
    """Every stage's schedule accepts the stage (polynomial's lr_end below its lr...), before
    any training."""
    for i, stage in enumerate(spec.model.stages):
        try:
            schedule_of(spec.schedules[i], stage)
        except UserError as e:
            raise UserError(f"{spec.shown}: stages[{i}].schedule: {e}") from None
