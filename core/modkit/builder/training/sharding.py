"""Fully sharded training (``strategy = "fsdp"``): FSDP2 over one stage, its distributed
checkpoints, and activation checkpointing of the backbone's blocks.

A stage under FSDP trains a sharded copy of what it trains (the backbone and the stage's
head): every block of the backbone the backbone declares is one FSDP unit, and the rest
(embeddings, final norm, head) is the root unit. Each process keeps 1/N of the weights,
gradients and optimizer state, and gathers a block's full weights only while it runs. The
build's own model stays whole; the sharded copy's weights are gathered back into it for
evaluation (on rank 0 only) and at the stage's end (on every rank, as the next stage and the
merges between stages start from it; after the last stage on rank 0 only, which alone
writes the artifact).

A checkpoint inside an FSDP stage is a ``torch.distributed.checkpoint`` folder that every
process writes its shards into; ``checkpoint.json`` naming it, written by rank 0 once every
process is done, is the one commit point. DCP re-shards on load, so a build resumes at any
world size.
"""
from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn

from modkit.errors import UserError
from modkit.fileio import atomic_write_text


def block_class(backbone: nn.Module) -> type | None:
    """The module class of one layer of ``backbone``, as its capabilities declare it."""
    return type(backbone).capabilities(backbone.config).block


def blocks_of(module: nn.Module, block: type | None) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, block)] if block is not None else []


def checkpoint_activations(blocks: list[nn.Module]) -> Callable[[], None]:
    """Make each block keep only its inputs in the forward pass and recompute the rest in the
    backward pass (``torch.utils.checkpoint``, non-reentrant: the RNG state is replayed, so
    dropout draws the same masks). Returns the undo. The module tree and its state dict stay
    as they are: only the instances' ``forward`` changes."""
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)

    def undo() -> None:
        for block in blocks:
            del block.forward  # back to the class's forward
    return undo


def shard(module: nn.Module, block: type | None, device: torch.device, world: int, *, bf16: bool = False,
          cpu_offload: bool = False) -> nn.Module:
    """A copy of ``module`` sharded with FSDP2 over the default process group: each ``block``
    one unit, the rest the root. Frozen weights are sharded as well (a PEFT stage's base).

    ``bf16``: each unit's gathered weights are cast to bfloat16 for forward and backward, and
    gradients reduced in float32 into the float32 shards the optimizer steps
    (``MixedPrecisionPolicy``). ``cpu_offload``: the shards, their gradients and the optimizer
    state live in CPU memory, and each unit's weights are copied to the device as it runs
    (``CPUOffloadPolicy``)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    policies = {"mesh": mesh,
                "mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
                else MixedPrecisionPolicy(),
                "offload_policy": CPUOffloadPolicy(pin_memory=device.type == "cuda") if cpu_offload else OffloadPolicy()}
    # The copy's weights start on the meta device, so no process holds the weights twice, even
    # for a moment; each then takes its shards from ``module``'s (ties stay ties: one memo entry).
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in module.parameters()}
    sharded = copy.deepcopy(module, memo)
    for unit in blocks_of(sharded, block):
        fully_shard(unit, **policies)
    fully_shard(sharded, **policies)
    sharded.to_empty(device=device)  # (buffers too: copied back below)
    with torch.no_grad():
        for (_, buffer), (_, original) in zip(sharded.named_buffers(remove_duplicate=False),
                                              module.named_buffers(remove_duplicate=False)):
            buffer.copy_(original)
        # FSDP2 shards each weight as torch.chunk over the processes along dim 0: each process
        # copies its own chunk (no communication, no second copy)
        originals, rank = dict(module.named_parameters(remove_duplicate=False)), mesh.get_local_rank()
        for name, param in sharded.named_parameters(remove_duplicate=False):
            chunks, local = torch.chunk(originals[name].detach(), world, dim=0), param.to_local()
            if local.numel():
                local.copy_(chunks[rank])
    return sharded


def release(whole: nn.Module) -> None:
    """Free the weights of ``whole`` while its sharded copy trains (each parameter keeps its
    identity, with no data): :func:`gather_into` gives them back."""
    for param in whole.parameters():
        param.data = torch.empty(0, dtype=param.dtype, device=param.device)


def gather_into(sharded: nn.Module, whole: nn.Module, *, everywhere: bool) -> None:
    """Give ``whole`` (same structure, its weights released or not) the sharded module's full
    weights: on every process, or (``everywhere=False``) gathered onto rank 0's CPU only. Every
    process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True,
                                                                  cpu_offload=not everywhere))
    params = dict(whole.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, value in full.items():  # empty on the other ranks with cpu_offload
            if name in params:  # the gathered tensor becomes the weight: no second copy
                params[name].data = value.to(params[name].device)
            else:
                whole.get_buffer(name).copy_(value)


def save_sharded(folder: Path, sharded: nn.Module, optimizer: torch.optim.Optimizer, *, stage: int, step: int,
                 losses: list[float], reports: list[dict], is_main: bool, part_losses: list[list[float]] = ()) -> None:
    """Every process writes its shards of the weights and optimizer state into a DCP folder;
    rank 0 then commits it by rewriting ``checkpoint.json`` (see the module's docstring). The
    stage-boundary weights file the previous checkpoint named stays named: it holds the heads
    of earlier stages, which this stage does not train."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    name = f"checkpoint-{stage}-{step}.dcp"
    target = folder / name
    if is_main:
        shutil.rmtree(target, ignore_errors=True)  # a partial one from an interrupted save
    dist.barrier()
    model_state, optim_state = get_state_dict(sharded, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(target))  # ends in a barrier
    if not is_main:
        return
    previous = json.loads((folder / "checkpoint.json").read_text()) if (folder / "checkpoint.json").exists() else {}
    meta = {"stage": stage, "step": step, "losses": losses, "part_losses": list(part_losses), "reports": reports,
            "dcp": name,
            "weights": previous.get("weights")}
    atomic_write_text(folder / "checkpoint.json", json.dumps(meta))  # the commit point
    for old in folder.glob("checkpoint-*.dcp"):
        if old.name != name:
            shutil.rmtree(old)


def load_sharded(folder: Path, model: nn.Module, sharded: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore a checkpoint into a stage under FSDP at whatever world size it now runs: the
    stage-boundary weights into ``model`` (earlier stages' heads), then the DCP folder's
    weights and optimizer state, re-sharded, into ``sharded`` and ``optimizer``. A checkpoint
    written without FSDP (a safetensors file) loads into ``model`` and is then sharded."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = json.loads((folder / "checkpoint.json").read_text())
    if "dcp" not in meta:
        raise UserError(f"{folder}: the checkpoint was written without FSDP; resume it with strategy = \"ddp\"")
    if meta.get("weights"):
        own = model.state_dict()
        tensors = load_file(str(folder / meta["weights"]))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.") and k[6:] in own},
                              strict=False)
    model_state, optim_state = get_state_dict(sharded, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(folder / meta["dcp"]))
    set_state_dict(sharded, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return meta
