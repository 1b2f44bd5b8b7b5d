"""The schedules' formulas: the multiplier of the peak lr at optimizer step n (from 0).

Each one computes exactly what transformers' ``get_*_schedule_with_warmup`` and
``get_inverse_sqrt_schedule`` do (the same operations in the same order), so the learning
rates are equal to the last bit.
"""
from __future__ import annotations

import math
from typing import Callable

from modkit.errors import UserError
from modkit.optim import warmup_factor

Factor = Callable[[int], float]


def _after_warmup(options, decay: Factor) -> Factor:
    warmup = options.warmup_steps or 0

    def factor(step: int) -> float:
        rising = warmup_factor(options, step, warmup)
        return decay(step) if rising is None else rising

    return factor


def constant(options, steps: int, lr: float) -> Factor:
    return _after_warmup(options, lambda step: 1.0)


def linear(options, steps: int, lr: float) -> Factor:
    warmup = options.warmup_steps or 0
    return _after_warmup(options, lambda step: max(0.0, float(steps - step) / float(max(1, steps - warmup))))


def cosine(options, steps: int, lr: float) -> Factor:
    warmup = options.warmup_steps or 0

    def decay(step: int) -> float:
        progress = float(step - warmup) / float(max(1, steps - warmup))
        half = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
        return max(0.0, half * (1 - options.floor) + options.floor)

    return _after_warmup(options, decay)


def inverse_sqrt(options, steps: int, lr: float) -> Factor:
    warmup = options.warmup_steps or 0
    timescale = options.timescale or warmup or 10_000
    if not options.shifted:
        return _after_warmup(options, lambda step: math.sqrt(timescale / max(step, timescale)))
    shift = timescale - warmup
    return _after_warmup(options, lambda step: 1.0 / math.sqrt((step + shift) / timescale))


def polynomial(options, steps: int, lr: float) -> Factor:
    warmup = options.warmup_steps or 0
    if not options.lr_end < lr:
        raise UserError(f"lr_end ({options.lr_end}) must be below the stage's lr ({lr})")

    def decay(step: int) -> float:
        if step > steps:
            return options.lr_end / lr
        remaining = 1 - (step - warmup) / max(1, steps - warmup)
        return ((lr - options.lr_end) * remaining**options.power + options.lr_end) / lr

    return _after_warmup(options, decay)
