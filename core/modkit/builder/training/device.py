"""Where and in which precision a build trains: the spec's ``device``, ``precision`` and ``compile``.

Weights, optimizer state and batches live on the training device; everything the build
writes (checkpoints, the artifact) is taken from CPU copies, so a GPU-built artifact loads
and serves on a machine without one.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from modkit.errors import SpecError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """``auto`` picks cuda, else mps, else cpu. Under DDP a bare ``cuda`` means this
    process's GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def check_device(device: torch.device, precision: str, source: str) -> None:
    """Fail before any work when the spec asks for what this machine cannot do."""
    problems = []
    if device.type == "cuda":
        if not torch.cuda.is_available():
            problems.append(("device", f"{device} requested but torch sees no CUDA GPU (torch {torch.__version__}; "
                                       "install a CUDA build of torch, or use device = \"cpu\")"))
        elif device.index is not None and device.index >= torch.cuda.device_count():
            problems.append(("device", f"{device} requested but only {torch.cuda.device_count()} GPU(s) are visible"))
    if device.type == "mps" and not _mps_available():
        problems.append(("device", "mps requested but this torch has no MPS backend available"))
    if precision == "fp16" and device.type != "cuda":
        problems.append(("precision", f"fp16 needs gradient scaling, which modkit does on CUDA only; "
                                      f"on {device.type} use precision = \"bf16\" or \"fp32\""))
    if problems:
        raise SpecError(source, problems)


@dataclass
class Precision:
    """Autocast for forward passes and, for fp16, a gradient scaler. Parameters stay fp32."""

    device: torch.device
    name: str = "fp32"

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    def autocast(self):
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> Any:
        """A GradScaler for fp16 (loss scaling keeps small gradients from flushing to zero)."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None


def map_tensors(batch: Any, fn) -> Any:
    """``fn`` applied to every tensor of a batch: a dict of tensors, or lists/dicts of them
    (a stage with several objectives draws one batch per objective)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch's tensors on ``device`` (other values as they are)."""
    non_blocking = device.type == "cuda"
    return map_tensors(batch, lambda v: v.to(device, non_blocking=non_blocking))


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of a module's state, for files that must not depend on the device."""
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
