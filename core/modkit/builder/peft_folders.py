"""Hugging Face PEFT adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``).

The core reads the files and asks each registered PEFT method whether it reads the folder's
``peft_type`` (:meth:`modkit.PeftMethod.from_hf_peft`). :func:`match_hf_modules` tells a
method which modkit layer a Hugging Face module name is, for any backbone whose checkpoint
format writes it: the format's ``to_hf`` gives each Hugging Face weight, and the modkit
linear layer whose weight it holds (as is, transposed as in GPT-2's Conv1D, or as a slice of
a fused projection such as GPT-2's ``c_attn``) is that module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from modkit.builder.checkpoints import format_for
from modkit.errors import ArtifactError, UserError
from modkit.nn.blocks import iter_roles
from modkit.registry import Registry, get_registry

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how peft names the wrapped model's modules


def read_peft_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise ArtifactError(f"{folder}: not a PEFT adapter folder (no {CONFIG})")
    if not (folder / WEIGHTS).is_file():
        other = " (adapter_model.bin is pickle, which modkit does not read)" if (folder / "adapter_model.bin").exists() else ""
        raise ArtifactError(f"{folder}: no {WEIGHTS}{other}")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        weights = load_file(str(folder / WEIGHTS))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, Exception) as e:  # safetensors raises its own
        raise ArtifactError(f"{folder}: unreadable PEFT adapter ({e})") from None
    return config, weights


def apply_peft_folder(model: nn.Module, folder: str | Path, *, registry: Registry | None = None):
    """Attach the adapter in ``folder`` to ``model``; return (method, its modules, its component)."""
    registry = registry or get_registry()
    config, weights = read_peft_folder(folder)
    for name in registry.names("peft"):
        comp = registry.get("peft", name)
        reader = getattr(comp.load(), "from_hf_peft", None)
        found = reader(config, weights, model) if reader is not None else None
        if found is not None:
            return (*found, comp)
    raise ArtifactError(f"{folder}: no PEFT method here reads peft_type {config.get('peft_type')!r}")


@dataclass(frozen=True)
class HFSlice:
    """A modkit linear layer that is (part of) a Hugging Face module: its weight is rows
    ``rows`` of the module's output features."""

    linear: nn.Linear
    role: str
    rows: slice


def _innermost(layer: nn.Module) -> nn.Linear:
    while not isinstance(layer, nn.Linear):
        layer = layer.base
    return layer


def _layouts(weight: torch.Tensor, linear: nn.Linear) -> list[torch.Tensor]:
    """The Hugging Face weight as (k * out, in) rows over the linear's inputs: in nn.Linear's
    layout or, transposed, in Conv1D's (in, out)."""
    w = linear.weight
    if weight.dim() != 2:
        return []
    return [c for c in (weight, weight.T) if c.shape[1] == w.shape[1] and c.shape[0] % w.shape[0] == 0]


def match_hf_modules(model: nn.Module, names: list[str], *, registry: Registry | None = None) -> dict[str, list[HFSlice]]:
    """For each Hugging Face module name (as PEFT writes it), the modkit layers it holds."""
    backbone = getattr(model, "backbone", model)
    _, hf_weights = format_for(backbone, registry=registry).to_hf(backbone)
    layers = [(role, _innermost(getattr(parent, attr))) for parent, attr, role in iter_roles(backbone)]
    found = {}
    for name in names:
        module = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
        parts = module.split(".")
        key = next((".".join(parts[i:]) + ".weight" for i in range(len(parts))
                    if ".".join(parts[i:]) + ".weight" in hf_weights), None)
        if key is None:
            raise UserError(f"PEFT module {module!r}: no such weight in the {type(backbone).__name__} checkpoint")
        slices = []
        for role, linear in layers:
            n = linear.weight.shape[0]
            for rows in _layouts(hf_weights[key], linear):
                slices += [HFSlice(linear, role, slice(start, start + n)) for start in range(0, rows.shape[0], n)
                           if torch.equal(rows[start:start + n], linear.weight.detach())]
        widths = {max(s.rows.stop for s in slices)} if slices else set()
        if not slices or sum(s.rows.stop - s.rows.start for s in slices) != widths.pop():
            raise UserError(f"PEFT module {module!r} is not one modkit layer with a role (or a fusion of them); "
                            "only role-carrying projections can be adapted")
        found[name] = slices
    return found
