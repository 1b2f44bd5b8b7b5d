"""What a build used: wall time, CPU time, and energy where the machine has a meter
(Linux RAPL counters under /sys/class/powercap for CPU packages and DRAM, NVML for NVIDIA
GPUs). Without a meter the energy stays None; ``modkit cost`` then estimates it."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


def _rapl_domains() -> list[Path]:
    """Top-level RAPL zones (``intel-rapl:0``...), whose counters include their subzones."""
    if not POWERCAP.is_dir():
        return []
    return sorted(p for p in POWERCAP.iterdir() if re.fullmatch(r"intel-rapl:\d+", p.name)
                  and os.access(p / "energy_uj", os.R_OK))


def _read_uj(zone: Path) -> tuple[int, int]:
    return int((zone / "energy_uj").read_text()), int((zone / "max_energy_range_uj").read_text())


def _nvml_handles():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no library, no driver, or no GPU: no meter
        return None, []


class ResourceMeter:
    """``meter = ResourceMeter.start()``, then later ``meter.stop()`` returns the record."""

    @classmethod
    def start(cls) -> "ResourceMeter":
        self = cls()
        self._zones = _rapl_domains()
        self._nvml, self._gpus = _nvml_handles()
        self._rapl0 = [_read_uj(z)[0] for z in self._zones]
        self._gpu0 = [self._gpu_mj(h) for h in self._gpus]
        self._wall0, self._cpu0 = time.perf_counter(), self._cpu_seconds()
        return self

    def stop(self) -> dict:
        self._wall1, self._cpu1 = time.perf_counter(), self._cpu_seconds()
        self._rapl1 = [_read_uj(z) for z in self._zones]
        self._gpu1 = [self._gpu_mj(h) for h in self._gpus]
        return self._record()

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def _gpu_mj(self, handle) -> int | None:
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception:  # older GPUs have no energy counter
            return None

    def _record(self) -> dict:
        joules, sources = 0.0, []
        if self._zones:
            for before, (after, wrap) in zip(self._rapl0, self._rapl1):
                joules += ((after - before) % wrap) / 1e6  # the counter wraps at max_energy_range_uj
            sources.append("rapl")
        gpu = [(b, a) for b, a in zip(self._gpu0, self._gpu1) if b is not None and a is not None]
        if gpu:
            joules += sum(a - b for b, a in gpu) / 1e3
            sources.append("nvml")
        return {"wall_seconds": round(self._wall1 - self._wall0, 3),
                "cpu_seconds": round(self._cpu1 - self._cpu0, 3),
                "cpu_count": os.cpu_count(), "gpu_count": len(self._gpus),
                "energy_kwh": joules / 3.6e6 if sources else None,
                "energy_source": "+".join(sources) or None}
