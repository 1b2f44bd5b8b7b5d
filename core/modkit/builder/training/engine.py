"""The training loop of one stage, with resumable checkpoints.

Every step draws its batch and its dropout from generators seeded by (seed, stage, step),
so a run resumed from a checkpoint takes exactly the steps an uninterrupted one would.

One step draws ``batch_size * accumulate`` examples from that stream. The examples are cut
into ``accumulate`` micro-batches of ``batch_size``, and each micro-batch into one slice per
process (DDP): every process sees different examples of the same seeded stream, and a step
sums the same gradients whether it runs as one batch, as micro-batches, or over processes.

Checkpoints are safetensors (weights and optimizer state) plus JSON: no pickle. They are
written from CPU copies, so they do not depend on the training device.
"""
from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modkit.builder.training.device import Precision, cpu_state, map_tensors, to_device
from modkit.builder.training.multi import WeightedObjectives
from modkit.builder.training.optim import stage_optimizer
from modkit.builder.training.sharding import (block_class, blocks_of, checkpoint_activations, gather_into, load_sharded,
                                              release, save_sharded, shard)
from modkit.errors import UserError
from modkit.fileio import atomic_path, atomic_write_text


def step_seed(seed: int, stage: int, step: int) -> int:
    return (seed * 1_000_003 + stage * 10_007 + step) % (2**63)


@dataclass
class Engine:
    """How a stage trains: device and precision, torch.compile, the process group and how the
    processes share the training (``strategy``: "ddp" or "fsdp", see :mod:`.sharding`)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    compile: bool = False
    rank: int = 0
    world: int = 1
    strategy: str = "ddp"
    cpu_offload: bool = False  # under FSDP: shards and optimizer state in CPU memory

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp(self) -> Precision:
        return Precision(self.device, self.precision)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as it trains: in DDP over the process group, compiled if asked. (FSDP
        shards before: see :func:`train_stage`.)"""
        if self.world > 1 and self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # A backbone's parts may sit out a stage (BERT's MLM head while it classifies).
            module = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
        return torch.compile(module) if self.compile else module

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the processes (for the logged loss)."""
        if self.world > 1:
            import torch.distributed as dist

            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value


class _StageLoss(nn.Module):
    """The stage's loss as a module's forward, so DDP and torch.compile can wrap it. It holds
    the backbone and this stage's heads only (all of them: DDP averages the gradients of the
    parameters of the module it wraps, and no others); earlier stages' heads take no part.
    Returns the loss to train on and each objective's own loss, detached."""

    def __init__(self, backbone: nn.Module, objective):
        super().__init__()
        self.backbone = backbone
        self.objective = objective if isinstance(objective, WeightedObjectives) else objective.head
        #: draws a step's batch on the CPU: the objective's reader (one batch per objective for several)
        self.draw = objective.batch if isinstance(objective, WeightedObjectives) else objective.reader.batch

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.objective, WeightedObjectives):
            return self.objective(self.backbone, batch)
        loss = self.objective.loss(self.backbone, batch)[0]
        return loss, loss.detach().float().reshape(1)


def micro_batches(batch: Any, size: int, count: int, rank: int, world: int) -> list[Any]:
    """Cut one drawn batch (``size * count`` rows) into ``count`` micro-batches of ``size``,
    and keep this process's slice of each."""
    per_rank = size // world
    return [map_tensors(batch, lambda v, lo=j * size + rank * per_rank: v[lo: lo + per_rank]) for j in range(count)]


def tokens_in(batch: Any) -> int:
    """Tokens a batch feeds the model (padding included: it costs compute too)."""
    if isinstance(batch, (list, tuple)):
        return sum(tokens_in(b) for b in batch)
    return sum(batch[k].numel() for k in ("input_ids", "decoder_input_ids") if isinstance(batch.get(k), torch.Tensor))


# --- checkpoints -----------------------------------------------------------------------

def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    *, stage: int, step: int, losses: list[float], reports: list[dict],
                    part_losses: list[list[float]] = ()) -> None:
    """Weights + optimizer state + RNG state + position + the finished stages' reports,
    written from CPU copies. ``part_losses`` holds each objective's own loss at every step.

    One commit point: the tensors go to a new file first, then ``checkpoint.json``, which names
    that file and holds everything else, replaces the old one in one rename. An interruption
    anywhere leaves either the old checkpoint or the new one, whole. At a stage boundary
    (``step == 0``) there is no optimizer state to keep.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in cpu_state(model).items()}
    opt = optimizer.state_dict() if optimizer is not None else {"state": {}, "param_groups": []}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().to("cpu").contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    weights = f"checkpoint-{stage}-{step}.safetensors"
    meta = {"stage": stage, "step": step, "losses": losses, "part_losses": list(part_losses),
            "reports": reports, "weights": weights,
            "param_groups": [{k: v for k, v in g.items()} for g in opt["param_groups"]]}
    with atomic_path(folder / weights) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(folder / "checkpoint.json", json.dumps(meta))  # the commit point
    for old in folder.glob("checkpoint-*.safetensors"):
        if old.name != weights:
            old.unlink()
    for old in folder.glob("checkpoint-*.dcp"):  # an FSDP stage's, now superseded
        shutil.rmtree(old)


def read_checkpoint_position(folder: Path) -> dict | None:
    """The last committed checkpoint's metadata (stage, step, losses, reports), or None."""
    path = folder / "checkpoint.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore a checkpoint into a model of the structure it was saved from, on the
    model's device."""
    meta = json.loads((folder / "checkpoint.json").read_text())
    if "dcp" in meta:
        raise UserError(f"{folder}: the checkpoint was written under FSDP; resume it with strategy = \"fsdp\"")
    tensors = load_file(str(folder / meta["weights"]))
    missing, unexpected = model.load_state_dict(
        {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    if unexpected or missing:
        raise RuntimeError(f"{folder}: checkpoint does not fit the model (missing {sorted(missing)[:5]}, "
                           f"unexpected {unexpected[:5]})")
    if optimizer is None:
        return meta
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    # load_state_dict moves the moments onto each parameter's device
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return meta


# --- the loop --------------------------------------------------------------------------

def flop_counter():
    """torch's FlopCounterMode: counts the FLOPs of what runs under it, forward and backward
    (matrix products and attention, whatever the backbone, objective and PEFT methods)."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    aten = torch.ops.aten

    def as_raw(formula):  # already shaped by torch's registry: not to be wrapped again
        def counted(*args, **kwargs):
            return formula(*args, **kwargs)
        counted._get_raw = True
        return counted

    # torch counts its CUDA attention kernels but not the CPU one, whose products are the same
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: as_raw(flop_registry[aten._scaled_dot_product_flash_attention]),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            as_raw(flop_registry[aten._scaled_dot_product_flash_attention_backward])}
    return FlopCounterMode(display=False, custom_mapping=cpu_attention)


@dataclass
class StepRecord:
    """What one optimizer step reports to the progress display and metrics.jsonl."""

    step: int
    loss: float
    lr: float
    tokens: int  # over all processes
    seconds: float
    flops_per_token: float = 0.0  # as counted on the stage's first step; 0 where not counted
    grad_norm: float = 0.0  # the gradients' global L2 norm before clipping
    eval: dict[str, float] = field(default_factory=dict)  # held-back figures, on evaluation steps


@dataclass
class StageLosses:
    """A stage's loss at every step, and each objective's own loss at every step (one row per
    step, in the order of the stage's objectives), averaged over micro-batches and processes."""

    total: list[float] = field(default_factory=list)
    parts: list[list[float]] = field(default_factory=list)


def train_stage(
    model: nn.Module,
    objective,
    data,
    stage,
    *,
    seed: int,
    index: int,
    checkpoint_dir: Path,
    resume: bool,
    engine: Engine | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    reports: list[dict] = (),
    optimizer=None,
    schedule=None,
    gather_everywhere: bool = True,
) -> StageLosses:
    """Train ``model`` (already on ``engine.device``) on one stage; return every step's losses.

    The trainable parameters are those with requires_grad. With ``resume``, a checkpoint
    written inside this stage is restored first. Only the main process writes checkpoints;
    ``reports`` (of the stages before) go into every checkpoint written. ``evaluate(step)``
    runs every ``stage.eval_every`` steps and after the last one; its figures go into that
    step's record. ``optimizer`` and ``schedule`` are the stage's resolved components (the
    defaults when None).

    Under FSDP a sharded copy trains while ``model``'s trained weights are released; they come
    back into ``model`` for evaluation (rank 0) and at the end, on every process or
    (``gather_everywhere=False``) on rank 0 only.
    """
    engine = engine or Engine()
    whole = _StageLoss(model.backbone, objective)
    block = block_class(model.backbone)
    fsdp = engine.strategy == "fsdp"
    trained = shard(whole, block, engine.device, engine.world, bf16=engine.precision == "bf16",
                    cpu_offload=engine.cpu_offload) if fsdp else whole
    undo = checkpoint_activations(blocks_of(trained, block)) if stage.activation_checkpointing else (lambda: None)
    params = [p for p in (trained if fsdp else model).parameters() if p.requires_grad]
    training = stage_optimizer(trained if fsdp else model, stage, optimizer, schedule)
    optimizer = training.optimizer
    scaler = engine.amp.scaler()
    losses = StageLosses()
    start = 0
    position = read_checkpoint_position(checkpoint_dir) if resume else None
    if position is not None and position["stage"] == index and position["step"] > 0:
        meta = (load_sharded(checkpoint_dir, model, trained, optimizer) if fsdp
                else load_checkpoint(checkpoint_dir, model, optimizer))
        start, losses = meta["step"], StageLosses(meta["losses"], meta.get("part_losses", []))
    if fsdp:  # the sharded copy holds them now; gathered back to evaluate and at the end
        release(whole)
    step_loss = engine.wrap(trained)
    model.train()
    trained.train()
    flops_per_token = 0.0
    for step in range(start, stage.steps):
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(step_seed(seed, index, step))
        drawn = whole.draw(data, stage.batch_size * stage.accumulate, generator)
        lr = training.set_lr(step)
        optimizer.zero_grad(set_to_none=True)
        micros = micro_batches(drawn, stage.batch_size, stage.accumulate, engine.rank, engine.world)
        # the first step counts its FLOPs for MFU (not under torch.compile, which runs its own kernels)
        counting = step == start and on_step is not None and not engine.compile
        counter = flop_counter() if counting else nullcontext()
        with counter:
            summed = _backward(step_loss, micros, engine, stage, seed=step_seed(seed, index, step), scaler=scaler)
        if counting:
            flops_per_token = counter.get_total_flops() / max(sum(tokens_in(m) for m in micros), 1)
        grad_norm = _apply(optimizer, scaler, params, stage.max_grad_norm)
        value, *parts = engine.mean(summed / stage.accumulate).tolist()  # the step's one host sync of the losses
        losses.total.append(value)
        losses.parts.append(parts)
        record = StepRecord(step + 1, value, lr, tokens_in(drawn), time.perf_counter() - began, flops_per_token,
                            grad_norm)
        every = getattr(stage, "eval_every", 0)
        if evaluate and (step + 1 == stage.steps or (every and (step + 1) % every == 0)):
            if fsdp:  # rank 0 evaluates the whole model
                gather_into(trained, whole, everywhere=False)
            record.eval = evaluate(step + 1)
            if fsdp:
                release(whole)
        if on_step:
            on_step(record)
        if (step + 1) % stage.checkpoint_every == 0 and step + 1 < stage.steps:
            at = {"stage": index, "step": step + 1, "losses": losses.total, "part_losses": losses.parts,
                  "reports": list(reports)}
            if fsdp:
                save_sharded(checkpoint_dir, trained, optimizer, **at, is_main=engine.is_main)
            elif engine.is_main:
                save_checkpoint(checkpoint_dir, model, optimizer, **at)
    undo()
    if fsdp:  # the gradients and optimizer state go before the full weights come
        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()
        gather_into(trained, whole, everywhere=gather_everywhere)
    model.eval()
    return losses


def _backward(step_loss, micros: list[dict], engine: Engine, stage, *, seed: int, scaler) -> torch.Tensor:
    """Forward and backward over one step's micro-batches (this process's share); the step's
    loss and each objective's, summed over them on the device (no host sync)."""
    ddp = engine.world > 1 and engine.strategy != "fsdp"
    summed = None
    for j, micro in enumerate(micros):
        # Dropout masks: seeded per step, micro-batch and process (offset 0 for one batch in one
        # process, as before accumulation existed).
        torch.manual_seed(seed + 7919 * (engine.rank * stage.accumulate + j))
        last = j == len(micros) - 1
        sync = step_loss.no_sync() if ddp and not last and hasattr(step_loss, "no_sync") else nullcontext()
        with sync:
            with engine.amp.autocast():
                loss, parts = step_loss(to_device(micro, engine.device))
            scaled = loss.float() / stage.accumulate
            (scaler.scale(scaled) if scaler else scaled).backward()
        figures = torch.cat([loss.detach().float().reshape(1), parts])
        summed = figures if summed is None else summed + figures
    return summed


def _apply(optimizer, scaler, params: list, max_grad_norm: float) -> float:
    """Clip (``max_grad_norm`` 0: measure only) and step; the gradients' norm before clipping."""
    if scaler:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")).item()
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return grad_norm
