"""Each process's peak memory during a stage, gathered onto rank 0 for the manifest.

What is measured is named by its key (:class:`modkit.manifest.RankMemory`):

- ``peak_rss_bytes``: the process's peak resident set size, everything it holds in CPU memory
  (weights, gradients, optimizer state and activations on CPU, but also the interpreter,
  torch's libraries and the data). On Linux it is ``VmHWM`` from ``/proc/self/status``, reset
  to the current size at the stage's start by writing 5 to ``/proc/self/clear_refs``, so it is
  the stage's own peak (``rss_since = "stage start"``); where that reset is refused or there is
  no /proc, it is the peak since the process started (``getrusage``).
- ``peak_allocated_bytes``, on CUDA: ``torch.cuda.max_memory_allocated``, reset at the
  stage's start: the tensors' own bytes on the device, not the allocator's cache.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        return True
    except OSError:
        return False


def _lifetime_peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class StagePeak:
    """``peak = StagePeak(device)`` when a stage starts; ``peak.gather(rank, world)`` when it ends
    (every process calls it): rank 0 gets one record per rank, the others None."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.reset = _STATUS.exists() and _reset_rss_peak()
        self.start_rss = _status_bytes("VmRSS")  # after the reset: the peak cannot be below it

    def measure(self) -> list[int]:
        """[peak RSS, RSS at the start, device peak] in bytes (-1 where not measured), whether the
        RSS peak is the stage's, and the device's index (-1 for none)."""
        rss = (_status_bytes("VmHWM") if self.reset else None) or _lifetime_peak_rss()
        on_cuda = self.device.type == "cuda"
        return [rss, self.start_rss if self.start_rss is not None else -1,
                torch.cuda.max_memory_allocated(self.device) if on_cuda else -1, int(self.reset),
                torch.cuda.current_device() if on_cuda else -1]

    def gather(self, rank: int, world: int) -> list[dict] | None:
        mine = torch.tensor(self.measure(), dtype=torch.int64, device=self.device)
        rows = [mine]
        if world > 1:
            import torch.distributed as dist

            rows = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(rows, mine)
        if rank != 0:
            return None
        return [self._record(r, row.tolist()) for r, row in enumerate(rows)]

    def _record(self, rank: int, row: list[int]) -> dict:
        rss, start, device, reset, index = row
        record = {"rank": rank, "device": self.device.type if index < 0 else f"{self.device.type}:{index}",
                  "peak_rss_bytes": rss, "rss_since": "stage start" if reset else "process start"}
        if start >= 0:
            record["start_rss_bytes"] = start
        if device >= 0:
            record["peak_allocated_bytes"] = device
        return record
