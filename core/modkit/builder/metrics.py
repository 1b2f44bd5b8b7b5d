"""What a build measures while it trains: OUT/metrics.jsonl and model-FLOPs utilisation.

MFU is the model FLOPs a second over the peak of the machine, which the build measures itself
with ``torch.mm`` on the training device and in the training precision. The model FLOPs per
token are counted by torch on the stage's first step (see
:func:`modkit.builder.train.flop_counter`): matrix products and attention, and only what the
step computes (an embedding lookup costs none, a frozen weight gets no gradient). Where nothing
was counted (a compiled model), the estimate 4·N + 2·T per token stands in.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from modkit.builder.device import _DTYPES


def measure_matmul_peak(device: torch.device, precision: str = "fp32", *, size: int | None = None,
                        repeats: int = 10) -> float:
    """The best FLOP/s of square ``torch.mm`` on ``device`` (2·n³ FLOPs per product)."""
    n = size or (4096 if device.type == "cuda" else 1024)
    dtype = _DTYPES[precision]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first product warms up
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mfu(parameters: int, tokens_per_second: float, peak: float, trainable: int | None = None) -> float:
    """Model-FLOPs utilisation estimated from the parameters: 2N per token forward, 2N backward
    to the activations, and 2 per trainable weight for its gradient (6N when everything trains;
    frozen weights skip that). Counts embedding tables as matrix products, so it reads high for
    models with large vocabularies and no LM head."""
    trainable = parameters if trainable is None else trainable
    return (4 * parameters + 2 * trainable) * tokens_per_second / peak if peak else 0.0


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
    """Follows one stage's steps: totals for the manifest, a line per step in metrics.jsonl."""

    def __init__(self, stage: int, objective: str, parameters: int, peak: float, log: MetricsLog | None,
                 trainable: int | None = None):
        self.stage, self.objective, self.parameters, self.peak, self.log = stage, objective, parameters, peak, log
        self.trainable = trainable
        self.tokens, self.seconds = 0, 0.0
        self.flops_per_token = 0.0
        self.last_eval: dict[str, float] = {}

    def __call__(self, record) -> dict[str, Any]:
        self.tokens += record.tokens
        self.seconds += record.seconds
        self.flops_per_token = record.flops_per_token
        tps = record.tokens / record.seconds if record.seconds else 0.0
        line = {"stage": self.stage, "objective": self.objective, "step": record.step, "loss": record.loss,
                "lr": record.lr, "grad_norm": record.grad_norm, "tokens_per_second": round(tps, 1), "tokens": self.tokens,
                "mfu": round(self.mfu(tps), 5), **record.eval}
        if record.eval:
            self.last_eval = record.eval
        if self.log is not None:
            self.log.write(line)
        return line

    def summary(self) -> dict[str, Any]:
        """Figures of the steps this process ran (a resumed stage: since the resume)."""
        tps = self.tokens / self.seconds if self.seconds else 0.0
        return {"tokens": self.tokens, "train_seconds": round(self.seconds, 2), "tokens_per_second": round(tps, 1),
                "mfu": round(self.mfu(tps), 5)}

    def mfu(self, tokens_per_second: float) -> float:
        if self.flops_per_token and self.peak:
            return self.flops_per_token * tokens_per_second / self.peak
        return mfu(self.parameters, tokens_per_second, self.peak, self.trainable)
