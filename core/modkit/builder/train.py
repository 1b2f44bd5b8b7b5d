"""The training loop of one stage, with resumable checkpoints.

Every step draws its batch and its dropout from generators seeded by (seed, stage, step),
so a run resumed from a checkpoint takes exactly the steps an uninterrupted one would.
Checkpoints are safetensors (weights and optimizer state) plus JSON: no pickle.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modkit.fileio import atomic_path, atomic_write_text


def step_seed(seed: int, stage: int, step: int) -> int:
    return (seed * 1_000_003 + stage * 10_007 + step) % (2**63)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(params: list[nn.Parameter], stage) -> torch.optim.Optimizer:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]  # biases and norms
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage.lr, betas=(0.9, 0.98), eps=1e-8)


# --- checkpoints -----------------------------------------------------------------------

def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    *, stage: int, step: int, losses: list[float], reports: list[dict]) -> None:
    """Weights + optimizer state + RNG state + position + the finished stages' reports.

    One commit point: the tensors go to a new file first, then ``checkpoint.json``, which names
    that file and holds everything else, replaces the old one in one rename. An interruption
    anywhere leaves either the old checkpoint or the new one, whole. At a stage boundary
    (``step == 0``) there is no optimizer state to keep.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict() if optimizer is not None else {"state": {}, "param_groups": []}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    weights = f"checkpoint-{stage}-{step}.safetensors"
    meta = {"stage": stage, "step": step, "losses": losses, "reports": reports, "weights": weights,
            "param_groups": [{k: v for k, v in g.items()} for g in opt["param_groups"]]}
    with atomic_path(folder / weights) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(folder / "checkpoint.json", json.dumps(meta))  # the commit point
    for old in folder.glob("checkpoint-*.safetensors"):
        if old.name != weights:
            old.unlink()


def read_checkpoint_position(folder: Path) -> dict | None:
    """The last committed checkpoint's metadata (stage, step, losses, reports), or None."""
    path = folder / "checkpoint.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore a checkpoint into a model of the structure it was saved from."""
    meta = json.loads((folder / "checkpoint.json").read_text())
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
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return meta


# --- the loop --------------------------------------------------------------------------

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
    on_step: Callable[[int, float], None] | None = None,
    reports: list[dict] = (),
) -> list[float]:
    """Train ``model`` on one stage and return the loss of every step.

    The trainable parameters are those with requires_grad. With ``resume``, a checkpoint
    written inside this stage is restored first. ``reports`` (of the stages before) go into
    every checkpoint written.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, stage)
    losses: list[float] = []
    start = 0
    position = read_checkpoint_position(checkpoint_dir) if resume else None
    if position is not None and position["stage"] == index and position["step"] > 0:
        meta = load_checkpoint(checkpoint_dir, model, optimizer)
        start, losses = meta["step"], meta["losses"]
    model.train()
    for step in range(start, stage.steps):
        torch.manual_seed(step_seed(seed, index, step))
        batch = objective.batch(data, stage.batch_size, torch.Generator().manual_seed(step_seed(seed, index, step)))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, stage.steps, stage.lr, stage.warmup_steps)
        loss, _ = objective.loss(model.backbone, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        if on_step:
            on_step(step + 1, loss.item())
        if (step + 1) % stage.checkpoint_every == 0 and step + 1 < stage.steps:
            save_checkpoint(checkpoint_dir, model, optimizer, stage=index, step=step + 1, losses=losses,
                            reports=list(reports))
    model.eval()
    return losses
