"""What a build measures while it trains: OUT/metrics.jsonl and model-FLOPs utilisation.

MFU is the model FLOPs a second over the peak of the processes' devices
(:mod:`modkit.builder.telemetry.peak`: each process measures its device's, in the training precision,
with the training thread count). The model FLOPs per token are counted by torch on the stage's
first step (see :func:`modkit.builder.training.engine.flop_counter`): matrix products and attention, and
only what the step computes (an embedding lookup costs none, a frozen weight gets no gradient).
Where nothing was counted (a compiled model), the estimate 4·N + 2·T per token stands in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def estimated_flops_per_token(parameters: int, trainable: int | None = None) -> float:
    """Training FLOPs per token estimated from the parameters: 2N forward, 2N backward to the
    activations, and 2 per trainable weight for its gradient (6N when everything trains;
    frozen weights skip that). Counts embedding tables as matrix products, so it reads high for
    models with large vocabularies and no LM head."""
    trainable = parameters if trainable is None else trainable
    return 4 * parameters + 2 * trainable


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step (and evaluation), appended as they
    happen so a resumed build keeps its history."""

    def __init__(self, path: Path, on_write: Callable[[dict[str, Any]], None] | None = None):
        self.path = path
        self.on_write = on_write  # the build's trackers

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.on_write:
            self.on_write(record)

    def rewind(self, stage: int, step: int) -> None:
        """Drop records after (stage, step): steps a resumed build is about to redo."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and (lambda r: (r["stage"], r["step"]) <= (stage, step))(json.loads(line))]
        self.path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class StageMeter:
    """Follows one stage's steps: totals for the manifest, a line per step in metrics.jsonl.

    ``peak`` is one process's (its device's); a step's tokens are all the processes', so MFU
    divides by ``processes`` peaks. An MFU above 1 would prove the peak measured low: from
    then on the stage reports none (``None``) and :meth:`mfu_text` says why."""

    def __init__(self, stage: int, objective: str, parameters: int, peak: float, log: MetricsLog | None,
                 trainable: int | None = None, processes: int = 1):
        self.stage, self.objective, self.parameters, self.log = stage, objective, parameters, log
        self.peak, self.processes = peak, processes
        self.trainable = trainable
        self.tokens, self.seconds = 0, 0.0
        self.flops_per_token = 0.0
        self.peak_too_low = False
        self.last_eval: dict[str, float] = {}

    def __call__(self, record) -> dict[str, Any]:
        self.tokens += record.tokens
        self.seconds += record.seconds
        self.flops_per_token = record.flops_per_token
        tps = record.tokens / record.seconds if record.seconds else 0.0
        line = {"stage": self.stage, "objective": self.objective, "step": record.step, "loss": record.loss,
                "lr": record.lr, "grad_norm": record.grad_norm, "tokens_per_second": round(tps, 1), "tokens": self.tokens,
                "mfu": _rounded(self.mfu(tps)), **record.eval}
        if record.eval:
            self.last_eval = record.eval
        if self.log is not None:
            self.log.write(line)
        return line

    def summary(self) -> dict[str, Any]:
        """Figures of the steps this process ran (a resumed stage: since the resume)."""
        tps = self.tokens / self.seconds if self.seconds else 0.0
        return {"tokens": self.tokens, "train_seconds": round(self.seconds, 2), "tokens_per_second": round(tps, 1),
                "mfu": _rounded(self.running_mfu())}

    def running_mfu(self) -> float | None:
        """The stage's MFU so far (over every step this process ran), steadier than a step's."""
        return self.mfu(self.tokens / self.seconds if self.seconds else 0.0)

    def mfu(self, tokens_per_second: float) -> float | None:
        """Model FLOPs a second over the processes' peak; None without a sound peak."""
        if self.peak_too_low or not self.peak:
            return None
        per_token = self.flops_per_token or estimated_flops_per_token(self.parameters, self.trainable)
        value = per_token * tokens_per_second / (self.peak * self.processes)
        if value > 1:  # the model cannot outrun the device: the peak was measured low
            self.peak_too_low = True
            return None
        return value

    def mfu_text(self) -> str:
        value = self.running_mfu()
        if value is not None:
            return f"MFU {value:.1%}"
        if not self.peak:
            return "no MFU (no matmul peak measured)"
        return (f"no MFU: the model outran the measured matmul peak ({self.peak / 1e9:,.1f} GFLOP/s a process), "
                f"so that peak is too low (measured while the machine was busy?)")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)
