"""The built-in optimizers: adam, adamw, sgd (torch's) and adafactor (T5's). Torch-free: the
implementations are imported on first use."""
from __future__ import annotations

from pydantic import Field, field_validator

import modkit
from modkit.optim import OptimizerOptions


class AdamOptions(OptimizerOptions):
    betas: tuple[float, float] = Field((0.9, 0.999), description="Decay rates of the first and second moments.")
    eps: float = Field(1e-8, gt=0, description="Added to the second moment's square root.")
    amsgrad: bool = Field(False, description="Use the maximum of past second moments (AMSGrad).")

    @field_validator("betas")
    @classmethod
    def _betas_below_one(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"betas must lie in [0, 1) (got {list(value)})")
        return value


class SGDOptions(OptimizerOptions):
    momentum: float = Field(0.0, ge=0, description="Momentum factor (0: plain SGD).")
    dampening: float = Field(0.0, ge=0, lt=1, description="Dampening of the momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0 and dampening 0).")

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, value: bool, info) -> bool:
        if value and (info.data.get("momentum", 0) <= 0 or info.data.get("dampening", 0) != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        return value


class AdafactorOptions(OptimizerOptions):
    eps: tuple[float, float] = Field((1e-30, 1e-3), description="Added to the squared gradient; floor of the "
                                                                 "parameter scale.")
    clip_threshold: float = Field(1.0, gt=0, description="Update clipping: an update's RMS is divided down to this.")
    decay_rate: float = Field(-0.8, lt=0, description="The second moment's decay is 1 - step^decay_rate.")
    beta1: float | None = Field(None, ge=0, lt=1, description="First-moment decay; none keeps no first moment.")
    scale_parameter: bool = Field(False, description="Multiply the step size by the parameter's RMS (at least eps[1]).")
    relative_step: bool = Field(False, description="Step size min(1e-2, 1/sqrt(step)) computed by the optimizer; the "
                                                   "stage's lr and schedule are then not used.")
    warmup_init: bool = Field(False, description="With relative_step: min(1e-6·step, 1/sqrt(step)).")

    @field_validator("warmup_init")
    @classmethod
    def _warmup_init_needs_relative_step(cls, value: bool, info) -> bool:
        if value and not info.data.get("relative_step"):
            raise ValueError("warmup_init needs relative_step = true")
        return value


@modkit.hookimpl
def modkit_register_optimizers(register):
    impl = "modkit_plugins.optim.optimizers_impl"
    register("adam", f"{impl}:adam", options=AdamOptions,
             doc="Adam (Kingma & Ba 2015); weight decay is added to the gradient (L2), as torch.optim.Adam.")
    register("adamw", f"{impl}:adamw", options=AdamOptions,
             doc="AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay.")
    register("sgd", f"{impl}:sgd", options=SGDOptions, doc="SGD with optional momentum and Nesterov momentum.")
    register("adafactor", "modkit_plugins.optim.adafactor:Adafactor", options=AdafactorOptions,
             doc="Adafactor (Shazeer & Stern 2018), T5's: factored second moments, update clipping, relative step.")
