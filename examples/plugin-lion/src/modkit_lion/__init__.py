"""modkit-lion: the Lion optimizer as a modkit component (options and registration only;
the implementation, which imports torch, loads on first use)."""
from __future__ import annotations

from pydantic import Field, field_validator

import modkit
from modkit.optim import OptimizerOptions


class LionOptions(OptimizerOptions):
    betas: tuple[float, float] = Field(
        (0.9, 0.99), description="β1 interpolates the momentum and the gradient for the update's sign; β2 decays "
                                 "the momentum.")

    @field_validator("betas")
    @classmethod
    def _betas_below_one(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"betas must lie in [0, 1) (got {list(value)})")
        return value


@modkit.hookimpl
def modkit_register_optimizers(register):
    register("lion", "modkit_lion.lion:Lion", options=LionOptions,
             doc="Lion (Chen et al. 2023): steps of the sign of an interpolated momentum, decoupled weight decay.")
