"""What every optimizer and learning-rate schedule component shares (torch-free).

An optimizer's options model subclasses :class:`OptimizerOptions`, which carries the
parameter groups every optimizer understands (no weight decay on biases and norms, learning
rate multipliers by parameter name). A schedule's subclasses :class:`ScheduleOptions`, which
carries the warm-up; :func:`warmup_factor` applies it the way transformers' schedules do.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from modkit.options import Options


class OptimizerOptions(Options):
    """Options of every optimizer: how the stage's trainable parameters are grouped."""

    decay_biases_and_norms: bool = Field(
        False, description="Apply weight decay to 1-D parameters (biases, norm weights) too; by default only "
                           "matrices and embeddings decay.")
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict,
        description="Parameter-name glob -> multiplier of the stage's lr, e.g. {\"objectives.*\" = 10} for the task "
                    "heads or {\"*attn.q*\" = 0.5} for a role; the first matching pattern wins.")


class ScheduleOptions(Options):
    """Options of every schedule: the warm-up."""

    warmup_steps: int | None = Field(
        None, ge=0, description="Steps of linear warm-up from 0 to the peak lr (default: the stage's warmup_steps).")
    warmup_ratio: float | None = Field(
        None, ge=0, le=1, description="Warm-up as a share of the stage's steps (rounded up), instead of warmup_steps.")
    warmup_from_zero: bool = Field(
        True, description="Warm-up as transformers: step n (from 0) gets n/warmup of the peak, so the first step "
                          "has lr 0. false: step n gets (n+1)/warmup (modkit's default schedule).")


    @model_validator(mode="after")
    def _one_warmup(self):
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("give warmup_steps or warmup_ratio, not both")
        return self


def warmup_factor(options: ScheduleOptions, step: int, warmup: int) -> float | None:
    """The warm-up multiplier of the peak lr at ``step`` (0 for the first optimizer step), or
    None once warm-up is over and the schedule's own decay applies."""
    if step >= warmup:
        return None
    return (step if options.warmup_from_zero else step + 1) / max(1, warmup)


__all__ = ["OptimizerOptions", "ScheduleOptions", "warmup_factor"]
