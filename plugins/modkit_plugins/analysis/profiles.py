"""Hardware profiles: the packaged hardware.toml plus the user's files, and this machine's CPU."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from modkit.errors import UserError
from modkit_plugins.analysis.cost_model import Profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGED = Path(__file__).with_name("hardware.toml")
ENV_VAR = "MODKIT_HARDWARE_PROFILES"
_FIELDS = {"power_w", "peak_tflops", "price_usd_hour"}


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such hardware profiles file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None


def _profile(name: str, table, path: Path) -> Profile:
    if not isinstance(table, dict) or not _FIELDS <= set(table):
        missing = sorted(_FIELDS - set(table)) if isinstance(table, dict) else sorted(_FIELDS)
        raise UserError(f"{path}: profile [{name}] lacks {', '.join(missing)}")
    price = table["price_usd_hour"]
    numbers = [table["power_w"], table["peak_tflops"], *(price if isinstance(price, list) else [])]
    if not (isinstance(price, list) and len(price) == 2 and price[0] <= price[1]) \
            or not all(isinstance(x, (int, float)) and x >= 0 for x in numbers) or table["peak_tflops"] <= 0:
        raise UserError(f"{path}: profile [{name}]: expected power_w >= 0, peak_tflops > 0 and "
                        f"price_usd_hour = [low, high] with low <= high")
    return Profile(name, str(table.get("description", "")), float(table["power_w"]),
                   float(table["peak_tflops"]), (float(price[0]), float(price[1])), table.get("tdp_w"))


def load_profiles(extra: list[str | Path] = ()) -> dict[str, Profile]:
    """Packaged profiles, then $MODKIT_HARDWARE_PROFILES files, then ``extra``; later wins."""
    paths = [PACKAGED] + [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    profiles: dict[str, Profile] = {}
    for path in paths + [Path(p) for p in extra]:
        for name, table in _read(path).items():
            profiles[name.lower()] = _profile(name, table, path)
    profiles["cpu"] = this_cpu(profiles["cpu"]) if "cpu" in profiles else None
    return {k: v for k, v in profiles.items() if v is not None}


def this_cpu(base: Profile) -> Profile:
    """The packaged ``cpu`` profile with this machine's per-core peak where /proc/cpuinfo tells it."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return base
    model = re.search(r"model name\s*:\s*(.+)", info)
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", info)
    flags = re.search(r"flags\s*:\s*(.+)", info)
    if not (mhz and flags):
        return base
    flags = set(flags.group(1).split())
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8  # fp32 FMA lanes x 2
    peak = float(mhz.group(1)) * 1e6 * per_cycle / 1e12
    name = model.group(1).strip() if model else "CPU"
    return Profile(base.name, f"{name}, per core ({per_cycle} fp32 FLOPs/cycle)", base.power_w, peak,
                   base.price_usd_hour, base.tdp_w)


def parse_hardware(text: str, profiles: dict[str, Profile]) -> tuple[Profile, int]:
    """``V100x64`` -> (V100 profile, 64); ``A100`` -> (A100, 1); ``cpu`` -> (cpu, cores here)."""
    m = re.fullmatch(r"(.+?)(?:[x×*](\d+))?", text.strip(), flags=re.IGNORECASE)
    name, count = m.group(1).lower(), m.group(2)
    if name not in profiles:
        raise UserError(f"--hardware {text!r}: unknown profile {m.group(1)!r} (known: "
                        f"{', '.join(p.name for p in profiles.values())}; add one with --profiles FILE)")
    devices = int(count) if count else (os.cpu_count() or 1) if name == "cpu" else 1
    if devices < 1:
        raise UserError(f"--hardware {text!r}: the device count must be at least 1")
    return profiles[name], devices
