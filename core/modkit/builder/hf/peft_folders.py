"""Adapter folders users already have: Hugging Face PEFT's (``adapter_config.json`` +
``adapter_model.safetensors``) and AdapterHub's (``adapter_config.json`` + ``adapter.safetensors``).

The core reads the files and asks each registered PEFT method whether it reads the folder
(:meth:`modkit.PeftMethod.from_hf_peft`: PEFT's ``peft_type``, AdapterHub's ``config``).
:func:`match_hf_modules` tells a method which modkit layer a Hugging Face module name is, for
any backbone whose checkpoint format writes it: the format's ``to_hf`` gives each Hugging Face
weight, and the modkit linear layer whose weight it holds (as is, transposed as in GPT-2's
Conv1D, or as a slice of a fused projection such as GPT-2's ``c_attn``) is that module.
:func:`match_hf_parent` does the same for the module that holds such a layer (where
AdapterHub hangs its adapters).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from modkit.builder.hf.convert import format_for, hf_model, load_model
from modkit.errors import ArtifactError, UserError
from modkit.fileio import atomic_dir
from modkit.nn.blocks import iter_roles
from modkit.registry import Registry, get_registry

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
#: weight files of the folders read (PEFT's, AdapterHub's) and their pickle twins, which are refused
READ_WEIGHTS = {WEIGHTS: "adapter_model.bin", "adapter.safetensors": "pytorch_adapter.bin"}
PEFT_PREFIX = "base_model.model."  # how peft names the wrapped model's modules


def read_peft_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise ArtifactError(f"{folder}: not a PEFT adapter folder (no {CONFIG})")
    found = [name for name in READ_WEIGHTS if (folder / name).is_file()]
    if not found:
        pickles = [p for p in READ_WEIGHTS.values() if (folder / p).exists()]
        other = f" ({pickles[0]} is pickle, which modkit does not read)" if pickles else ""
        raise ArtifactError(f"{folder}: no {' or '.join(READ_WEIGHTS)}{other}")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        weights = load_file(str(folder / found[0]))
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
    kind = f"peft_type {config['peft_type']!r}" if "peft_type" in config else "this adapter_config.json"
    raise ArtifactError(f"{folder}: no PEFT method here reads {kind}")


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


def match_hf_parent(model: nn.Module, module: str, *, registry: Registry | None = None) -> tuple[str, list[HFSlice]]:
    """The one role-carrying linear layer among the direct children of the Hugging Face module
    ``module`` (e.g. BERT's ``encoder.layer.0.attention.output``, which holds the attention's
    output projection): its Hugging Face name and slices. Leading segments (``bert.``) may differ
    between ``module`` and the checkpoint."""
    backbone = getattr(model, "backbone", model)
    _, hf_weights = format_for(backbone, registry=registry).to_hf(backbone)
    parts = module.split(".")
    children = []
    for key, weight in hf_weights.items():
        if weight.dim() != 2 or not key.endswith(".weight"):
            continue
        parent = key[: -len(".weight")].split(".")[:-1]
        n = min(len(parent), len(parts))
        if n and parent[-n:] == parts[-n:]:
            children.append(key[: -len(".weight")])
    found = {}
    for name in children:  # the children that are role-carrying layers (not embeddings or norms)
        try:
            found.update(match_hf_modules(backbone, [name], registry=registry))
        except UserError:
            continue
    if len(found) != 1:
        raise UserError(f"Hugging Face module {module!r} holds {len(found) or 'no'} role-carrying linear layers "
                        f"{sorted(found) if found else ''} in the {type(backbone).__name__} checkpoint; "
                        "expected exactly one")
    return next(iter(found.items()))


def find_in_hf_weights(hf_weights: dict[str, torch.Tensor], linear: nn.Linear) -> tuple[str, slice, bool]:
    """The Hugging Face module holding ``linear``'s weight: (module name, rows, Conv1D layout?)."""
    found = []
    n = linear.weight.shape[0]
    for key, weight in hf_weights.items():
        if not key.endswith(".weight"):
            continue
        for rows in _layouts(weight, linear):
            found += [(key[: -len(".weight")], slice(start, start + n), rows is not weight)
                      for start in range(0, rows.shape[0], n) if torch.equal(rows[start:start + n], linear.weight.detach())]
    if len(found) != 1:
        raise UserError(f"a {linear.in_features}->{linear.out_features} layer is {'in no' if not found else 'in several'} "
                        "Hugging Face weights of this model; cannot name it for PEFT")
    return found[0]


def export_peft(model: nn.Module | str | Path, dest: str | Path, *, registry: Registry | None = None) -> list[Path]:
    """Write each PEFT method on ``model`` (or the artifact folder it names) as a Hugging Face
    PEFT folder ``dest/<method>``, over the base that ``modkit export-hf`` writes. A method
    that peft cannot express raises a UserError naming the alternative."""
    registry = registry or get_registry()
    if not isinstance(model, nn.Module):
        model = load_model(model, registry=registry)
    hf_config, hf_weights = format_for(base := hf_model(model, registry=registry), registry=registry).to_hf(base)
    written = []
    for name in registry.names("peft"):
        writer = getattr(registry.get("peft", name).load(), "to_hf_peft", None)
        found = writer(model, hf_weights, hf_config) if writer is not None else None
        if found is None:
            continue
        config, weights = found
        with atomic_dir(Path(dest) / name) as tmp:
            (tmp / CONFIG).write_text(json.dumps(config, indent=2))
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS),
                      metadata={"format": "pt"})
        written.append(Path(dest) / name)
    if not written:
        raise UserError("no PEFT modules to export (a merged LoRA is in the base weights: build with "
                        "[export] merge = false to keep it apart)")
    return written
