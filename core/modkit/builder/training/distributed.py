"""Data-parallel builds with torch.distributed, started by torchrun.

``modkit build SPEC -o OUT --nproc N`` starts ``torchrun --standalone --nproc-per-node N -m
modkit build SPEC -o OUT``; torchrun (or a multi-node torchrun started by the user) sets
RANK, LOCAL_RANK and WORLD_SIZE, and every process runs the same build: gloo on CPU, NCCL on
GPU, one GPU per process. Rank 0 alone writes the work folder's files (tokenizer,
checkpoints, metrics) and the artifact; the others wait for it where they need its files.
A process that dies makes torchrun stop the others and exit non-zero; collectives time out
rather than wait forever.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import torch

#: how long a collective may wait for a slow or lost process (seconds)
TIMEOUT_SECONDS = int(os.environ.get("MODKIT_DDP_TIMEOUT", "600"))


def world_from_environment() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; (0, 0, 1) outside torchrun."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def start_process_group(device: torch.device, world: int, *, alone: bool = False) -> bool:
    """Join the default process group when there is more than one process (or, with ``alone``,
    make a group of this one process outside torchrun: FSDP needs one); whether this call
    started it (and so should :func:`end_process_group` it)."""
    import torch.distributed as dist

    if (world <= 1 and not alone) or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if world <= 1 and "WORLD_SIZE" not in os.environ:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=timedelta(seconds=TIMEOUT_SECONDS))
    else:
        dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_SECONDS))
    return True


def end_process_group() -> None:
    """Tear the group down while the interpreter is whole. FSDP's modules can hold the group in
    reference cycles; collected only at exit, they would destroy a gloo group during
    interpreter finalization, where its threads freeing tensors abort the process (SIGABRT,
    "terminate called without an active exception": about 1 in 8 two-process FSDP builds here
    before). So the cycles are collected first."""
    import gc

    import torch.distributed as dist

    gc.collect()
    dist.destroy_process_group()


def main_first(world: int, rank: int, make):
    """``make()`` on rank 0, then on the others once it is done (they reuse what it wrote:
    a trained tokenizer, a token file)."""
    if rank == 0:
        result = make()
        barrier(world)
        return result
    barrier(world)
    return make()


def barrier(world: int) -> None:
    """Wait until every process gets here (rank 0 has written what the others read)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def launch(nproc: int, args: list[str]) -> int:
    """Run ``modkit ARGS`` in ``nproc`` processes on this machine under torchrun; its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "modkit", *args]
    return subprocess.call(command)  # torchrun sets OMP_NUM_THREADS=1 per process unless it is set
