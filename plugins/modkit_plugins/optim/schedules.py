"""The built-in learning-rate schedules, each after an optional linear warm-up (torch-free)."""
from __future__ import annotations

from pydantic import Field

import modkit
from modkit.optim import ScheduleOptions


class ConstantOptions(ScheduleOptions):
    pass


class LinearOptions(ScheduleOptions):
    pass


class CosineOptions(ScheduleOptions):
    floor: float = Field(0.0, ge=0, le=1, description="The lr the cosine ends at, as a fraction of the peak.")


class InverseSqrtOptions(ScheduleOptions):
    timescale: int | None = Field(None, gt=0, description="k in the decay after the warm-up (default: warmup_steps, "
                                                          "else 10,000).")
    shifted: bool = Field(True, description="true: peak·sqrt(k / (n + k - warmup)), transformers' form; false: "
                                            "peak·sqrt(k / max(n, k)), T5's (the peak for k steps, then 1/sqrt(n)).")


class PolynomialOptions(ScheduleOptions):
    lr_end: float = Field(1e-7, ge=0, description="The lr at the last step (absolute, below the peak).")
    power: float = Field(1.0, gt=0, description="Exponent of the decay (1: linear).")


@modkit.hookimpl
def modkit_register_schedules(register):
    impl = "modkit_plugins.optim.schedules_impl"
    register("constant", f"{impl}:constant", options=ConstantOptions, doc="The peak lr throughout, after the warm-up.")
    register("linear", f"{impl}:linear", options=LinearOptions, doc="Linear decay from the peak to 0 at the last step.")
    register("cosine", f"{impl}:cosine", options=CosineOptions,
             doc="Half a cosine from the peak down to floor × peak at the last step.")
    register("inverse-sqrt", f"{impl}:inverse_sqrt", options=InverseSqrtOptions,
             doc="Inverse square root decay (Vaswani et al. 2017; T5's 1/sqrt(max(n, k)) with warmup_steps = 0).")
    register("polynomial", f"{impl}:polynomial", options=PolynomialOptions,
             doc="Polynomial decay from the peak to lr_end (fairseq's polynomial_decay; power 1 is linear).")
