"""The peak matrix-product rate of the training device, the denominator of MFU.

A peak is sound only as an upper bound of what the device can do: MFU = the model's FLOP/s
over the peak must then stay at or below 1. Timing a long product on a shared machine
measures the share of the CPU the process got at that moment, not the hardware, and a later
quieter moment trains faster than that "peak" (MFU 130 %). So products are timed one by one,
many times, at sizes short enough that some run between two preemptions, and the best rate
counts; on CPU with several threads, the thread count times the best one-thread rate is a
bound too (threads cannot beat one thread each), and the larger of the two is taken. The best
rate a machine has shown is kept in ``$MODKIT_CACHE/matmul-peak.json``, so one build measured
on a busy machine does not set it low for the next.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from modkit.builder.training.device import _DTYPES
from modkit.fileio import atomic_write_text, cache_folder

#: square products timed, per device type: big enough for the kernels' full rate, short
#: enough (on CPU, well under a millisecond to a few) to run between preemptions
SIZES = {"cuda": (4096, 8192), "mps": (1024, 2048, 4096), "cpu": (256, 512, 1024)}


def measure_matmul_peak(device: torch.device, precision: str = "fp32", *, seconds: float = 0.5,
                        sizes: tuple[int, ...] | None = None) -> float:
    """The best FLOP/s of square ``torch.mm`` products (2·n³ FLOPs each) on ``device`` in
    ``precision``, each timed alone for about ``seconds`` in all, with this process's thread
    count; on CPU at least the thread count times the best one-thread rate."""
    sizes = sizes or SIZES.get(device.type, SIZES["cpu"])
    best = _best_rate(device, _DTYPES[precision], sizes, seconds)
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:
        torch.set_num_threads(1)
        try:
            best = max(best, threads * _best_rate(device, _DTYPES[precision], sizes, seconds))
        finally:
            torch.set_num_threads(threads)
    return best


def matmul_peak(device: torch.device, precision: str = "fp32") -> float:
    """The best rate this machine has shown for ``device``, ``precision`` and this thread
    count: measured now (:func:`measure_matmul_peak`) and merged with the cached one."""
    measured = measure_matmul_peak(device, precision)
    path, key = cache_folder() / "matmul-peak.json", cache_key(device, precision)
    known = _read(path)
    if measured <= known.get(key, 0.0):
        return known[key]
    known[key] = measured
    try:
        atomic_write_text(path, json.dumps(known, indent=1))
    except OSError:  # a read-only home: the measurement still stands for this build
        pass
    return measured


def cache_key(device: torch.device, precision: str) -> str:
    """What a cached peak holds for: the processor, the precision, the thread count, torch."""
    return f"{device_name(device)} | {precision} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def device_name(device: torch.device) -> str:
    """The processor's model: the GPU's name, or the CPU's from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if device.type == "cpu" and cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return f"{device.type} {platform.processor() or platform.machine()}"


def _best_rate(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...], seconds: float) -> float:
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)  # warm-up: the kernel's first call allocates and plans
        _sync(device)
        deadline, runs = time.perf_counter() + seconds / len(sizes), 0
        while runs < 3 or time.perf_counter() < deadline:
            t0 = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
            runs += 1
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _read(path: Path) -> dict[str, float]:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or a torn file: measure afresh
        return {}
    return {k: float(v) for k, v in known.items() if isinstance(v, (int, float))} if isinstance(known, dict) else {}
