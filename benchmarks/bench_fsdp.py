"""What FSDP and activation checkpointing save, and what they cost.

    python benchmarks/bench_fsdp.py checkpointing [--d-model 256 --layers 4 --batch 8 --seq 256 --repeats 3]
    python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/bench_fsdp.py sharding \\
        [--d-model 768 --layers 12 --seq 128]

``checkpointing`` (one process): a GPT training step with and without
``activation_checkpointing``: the bytes the forward pass keeps for the backward pass (counted
with ``torch.autograd.graph.saved_tensors_hooks``; with checkpointing, a block's activations
are recomputed one block at a time in the backward pass, so its peak adds one block's worth)
and the median step time.

``sharding`` (under torchrun, gloo on CPU): one AdamW step of a GPT-2-small-shaped model
under DDP and under FSDP (modkit's own wrapping, :mod:`modkit.builder.training.sharding`); each rank
counts the bytes it holds of weights, gradients and optimizer state (a DTensor counts its local
shard) and rank 0 prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import modkit
from modkit.builder.training.sharding import block_class, blocks_of, checkpoint_activations, shard
from modkit.builder.training.engine import Engine


class LMLoss(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, ids):
        logits = self.backbone.lm_logits(self.backbone(ids).last_hidden_state)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def gpt(d_model: int, layers: int, seq: int, vocab: int):
    comp = modkit.get_registry().get("backbone", "gpt")
    torch.manual_seed(0)
    return comp.load()(comp.options(vocab_size=vocab, d_model=d_model, n_layers=layers, n_heads=max(d_model // 64, 1),
                                    n_positions=seq, dropout=0.0))


def step(module, optimizer, ids) -> None:
    optimizer.zero_grad(set_to_none=True)
    module(ids).backward()
    optimizer.step()


def saved_bytes(module, ids) -> int:
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        loss = module(ids)
    loss.backward()
    module.zero_grad(set_to_none=True)
    return sum(kept)


def checkpointing(args) -> None:
    module = LMLoss(gpt(args.d_model, args.layers, args.seq, args.vocab))
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    rows = []
    for label, on in (("off", False), ("on", True)):
        undo = checkpoint_activations(blocks_of(module, block_class(module.backbone))) if on else (lambda: None)
        kept = saved_bytes(module, ids)
        step(module, optimizer, ids)  # warm-up
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            step(module, optimizer, ids)
            times.append(time.perf_counter() - began)
        undo()
        rows.append((label, kept, statistics.median(times)))
    print(f"GPT d_model={args.d_model} layers={args.layers}, batch {args.batch} x {args.seq}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} steps\n")
    print("| activation_checkpointing | kept for backward (MiB) | step (s) |\n|---|---:|---:|")
    for label, kept, seconds in rows:
        print(f"| {label} | {kept / 2**20:,.1f} | {seconds:.3f} |")
    print(f"\nkept: {rows[1][1] / rows[0][1]:.1%} of off; time: x{rows[1][2] / rows[0][2]:.2f}")


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def held(module, optimizer) -> tuple[int, int, int]:
    params = list(module.parameters())
    states = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    return local_bytes(params), local_bytes(p.grad for p in params), local_bytes(states)


def sharding(args) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    ids = torch.randint(0, args.vocab, (2, args.seq), generator=torch.Generator().manual_seed(rank))
    figures = {}
    for strategy in ("ddp", "fsdp"):
        whole = LMLoss(gpt(args.d_model, args.layers, args.seq, args.vocab))
        if strategy == "fsdp":
            module = shard(whole, block_class(whole.backbone), device, world)
            del whole  # the build keeps it (see docs/guide.md); the figures here are the training copy's
        else:
            module = Engine(device, world=world, strategy="ddp").wrap(whole)
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        began = time.perf_counter()
        step(module, optimizer, ids)
        seconds = time.perf_counter() - began
        mine = torch.tensor([*held(module, optimizer), 0], dtype=torch.float64)
        mine[3] = seconds
        every = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
        figures[strategy] = every
        del module, optimizer
    if rank == 0:
        n = sum(p.numel() for p in gpt(args.d_model, args.layers, args.seq, args.vocab).parameters())
        print(f"GPT d_model={args.d_model} layers={args.layers} vocab={args.vocab} ({n / 1e6:.0f}M parameters), "
              f"{world} gloo processes, one AdamW step at 2 x {args.seq} per rank\n")
        print("| strategy | rank | weights (MiB) | gradients (MiB) | optimizer state (MiB) | sum (MiB) | step (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for strategy, every in figures.items():
            for r, f in enumerate(every):
                w, g, o, s = f.tolist()
                print(f"| {strategy} | {r} | {w / 2**20:,.0f} | {g / 2**20:,.0f} | {o / 2**20:,.0f} | "
                      f"{(w + g + o) / 2**20:,.0f} | {s:.2f} |")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["checkpointing", "sharding"])
    parser.add_argument("--d-model", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    small = args.what == "checkpointing"
    args.d_model = args.d_model or (256 if small else 768)
    args.layers = args.layers or (4 if small else 12)
    args.seq = args.seq or (256 if small else 128)
    args.vocab = args.vocab or (8000 if small else 50257)
    (checkpointing if small else sharding)(args)


if __name__ == "__main__":
    main()
