"""Optimizer contract: deterministic steps, no step without a gradient, an exact state round
trip through modkit's safetensors + JSON checkpoint."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from modkit.builder.training.optim import param_groups
from modkit.builder.training.engine import load_checkpoint, save_checkpoint


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # a matrix, a bias, a norm and a 3-D weight; `idle` never gets a gradient, `frozen` is not trained
    model = nn.ModuleDict({"embed": nn.Embedding(11, 6), "proj": nn.Linear(6, 5), "norm": nn.LayerNorm(5),
                           "idle": nn.Linear(5, 5)})
    model.register_parameter("mix", nn.Parameter(torch.randn(2, 3, 5) * 0.1))
    model.register_parameter("frozen", nn.Parameter(torch.randn(5), requires_grad=False))
    return model


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    ids = torch.randint(0, 11, (3, 4), generator=torch.Generator().manual_seed(step))
    hidden = model["norm"](model["proj"](model["embed"](ids)) + model.frozen)
    loss = (hidden.unsqueeze(-2) * model.mix.sum(0)).sum(-1).pow(2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def check_optimizer(impl, options, *, lr: float = 1e-2, weight_decay: float = 0.01, steps: int = 4,
                    seed: int = 0) -> None:
    """``impl(param_groups, options)`` (an optimizer component's implementation) against its contract:

    - every step moves the trained weights, and two runs from the same start give the same
      weights bit for bit, whatever torch's global seed;
    - a parameter with no gradient (a head that sits out a stage) does not move, weight decay
      included, and one that is not trainable is never given to the optimizer;
    - the state is tensors, and saved with modkit's checkpoint (safetensors + JSON) after
      ``steps`` steps and restored into a fresh optimizer, it continues exactly as the
      uninterrupted optimizer does.
    """
    def fresh():
        model = _model(seed)
        return model, impl(param_groups(model, options, lr, weight_decay), options)

    model, optimizer = fresh()
    start = _weights(model)
    for step in range(steps):
        _step(model, optimizer, step)
    moved = _same(start, _weights(model))
    assert {"embed.weight", "proj.weight", "mix"} <= set(moved), f"training steps left weights unchanged: {moved}"
    assert not [k for k in moved if k.startswith("idle.") or k == "frozen"], \
        f"parameters without a gradient moved: {[k for k in moved if k.startswith('idle.') or k == 'frozen']}"
    given = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.frozen) not in given, "the optimizer was given a parameter that does not train"

    again, optimizer2 = fresh()
    torch.manual_seed(seed + 1)  # the same weights whatever torch's global seed
    for step in range(steps):
        _step(again, optimizer2, step)
    assert not _same(_weights(model), _weights(again)), \
        "two identical runs gave different weights (does a step draw from torch's global RNG?)"

    for pid, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            assert isinstance(value, torch.Tensor), \
                f"optimizer state {key!r} of parameter {pid} is a {type(value).__name__}, not a tensor (checkpoints are safetensors)"
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(Path(folder), model, optimizer, stage=0, step=steps, losses=[], reports=[])
        restored, optimizer3 = fresh()
        load_checkpoint(Path(folder), restored, optimizer3)
    for step in range(steps, 2 * steps):
        _step(model, optimizer, step)
        _step(restored, optimizer3, step)
    differ = _same(_weights(model), _weights(restored))
    assert not differ, f"after a checkpoint round trip the optimizer stepped differently: {differ}"
