"""The built-in optimizers and schedules against their references: torch's Adam, AdamW and SGD
and transformers' Adafactor give the same weights after 50 steps on the same model and data;
transformers' schedules give the same learning rate at every step, to the last bit."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from modkit.builder.training.optim import param_groups, schedule_of
from modkit.registry import get_registry
from modkit.spec import Resolved, resolve_default

STEPS = 50


def component(kind: str, name: str, **options) -> Resolved:
    comp = get_registry().get(kind, name)
    return Resolved(comp, comp.options(**options), kind)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(20, 12), torch.nn.Linear(12, 16), torch.nn.GELU(),
                               torch.nn.LayerNorm(16), torch.nn.Linear(16, 20))


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lrs=None) -> torch.nn.Module:
    """50 steps of next-token loss on fixed random batches (the same for every run)."""
    for step in range(STEPS):
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(0, 20, (4, 9), generator=g)
        if lrs is not None:
            for group in optimizer.param_groups:
                group["lr"] = lrs(step)
        optimizer.zero_grad()
        logits = model(ids[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
    return model


def ours(name: str, lr: float = 1e-3, weight_decay: float = 0.01, **options) -> torch.nn.Module:
    model = tiny_model()
    res = component("optimizer", name, **options)
    groups = param_groups(model, res.options, lr, weight_decay)
    return train(model, res.component.load()(groups, res.options))


def reference(make, weight_decay: float = 0.01) -> torch.nn.Module:
    """The reference optimizer over the same groups: matrices decay, biases and norms do not."""
    model = tiny_model()
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return train(model, make(groups))


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def moved(model: torch.nn.Module) -> float:
    return max_diff(model, tiny_model())


TORCH_CASES = [
    ("adam", {}, lambda g: torch.optim.Adam(g, lr=1e-3)),
    ("adam", {"betas": (0.8, 0.95), "eps": 1e-6, "amsgrad": True},
     lambda g: torch.optim.Adam(g, lr=1e-3, betas=(0.8, 0.95), eps=1e-6, amsgrad=True)),
    ("adamw", {}, lambda g: torch.optim.AdamW(g, lr=1e-3)),
    ("adamw", {"betas": (0.9, 0.98), "eps": 1e-6}, lambda g: torch.optim.AdamW(g, lr=1e-3, betas=(0.9, 0.98), eps=1e-6)),
    ("sgd", {}, lambda g: torch.optim.SGD(g, lr=1e-3)),
    ("sgd", {"momentum": 0.9}, lambda g: torch.optim.SGD(g, lr=1e-3, momentum=0.9)),
    ("sgd", {"momentum": 0.9, "nesterov": True}, lambda g: torch.optim.SGD(g, lr=1e-3, momentum=0.9, nesterov=True)),
    ("sgd", {"momentum": 0.5, "dampening": 0.1}, lambda g: torch.optim.SGD(g, lr=1e-3, momentum=0.5, dampening=0.1)),
]


@pytest.mark.parity
@pytest.mark.parametrize("name, options, make", TORCH_CASES)
def test_torch_optimizers_give_torchs_weights(name, options, make):
    got, want = ours(name, **options), reference(make)
    assert moved(want) > 1e-4  # the comparison is not between two untrained models
    assert max_diff(got, want) < 1e-6


ADAFACTOR_CASES = [  # (our options, transformers' options)
    ({}, {"lr": 1e-3, "relative_step": False, "scale_parameter": False}),
    ({"relative_step": True, "scale_parameter": True}, {"lr": None, "relative_step": True, "scale_parameter": True}),
    ({"relative_step": True, "warmup_init": True, "scale_parameter": True},
     {"lr": None, "relative_step": True, "warmup_init": True, "scale_parameter": True}),
    ({"beta1": 0.9, "clip_threshold": 0.5, "decay_rate": -0.6, "eps": (1e-29, 1e-4)},
     {"lr": 1e-3, "relative_step": False, "scale_parameter": False, "beta1": 0.9, "clip_threshold": 0.5,
      "decay_rate": -0.6, "eps": (1e-29, 1e-4)}),
]


@pytest.mark.parity
@pytest.mark.parametrize("options, theirs", ADAFACTOR_CASES)
def test_adafactor_gives_transformers_weights(options, theirs):
    optimization = pytest.importorskip("transformers.optimization")
    got = ours("adafactor", **options)
    want = reference(lambda groups: optimization.Adafactor(groups, **theirs))
    assert moved(want) > 1e-4
    assert max_diff(got, want) < 1e-6


def test_adafactor_keeps_factored_moments_for_matrices_only():
    model = tiny_model()
    res = component("optimizer", "adafactor")
    optimizer = res.component.load()(param_groups(model, res.options, 1e-3, 0.0), res.options)
    train(model, optimizer)
    weight, bias = model[1].weight, model[1].bias
    assert set(optimizer.state[weight]) == {"step", "exp_avg_sq_row", "exp_avg_sq_col"}
    assert optimizer.state[weight]["exp_avg_sq_row"].shape == (16,)
    assert optimizer.state[weight]["exp_avg_sq_col"].shape == (12,)
    assert set(optimizer.state[bias]) == {"step", "exp_avg_sq"}
    assert all(isinstance(v, torch.Tensor) for s in optimizer.state.values() for v in s.values())


# --- schedules ----------------------------------------------------------------------------

def hf_lrs(make, steps: int = STEPS, lr: float = 1e-3) -> list[float]:
    """The lr transformers' scheduler gives each of ``steps`` optimizer steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make(optimizer)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def our_lrs(name: str, steps: int = STEPS, lr: float = 1e-3, warmup: int = 0, **options) -> list[float]:
    stage = SimpleNamespace(lr=lr, steps=steps, warmup_steps=warmup)
    lr_of = schedule_of(component("schedule", name, **options), stage)
    return [lr_of(n) for n in range(steps)]


SCHEDULE_CASES = [  # (our schedule and options, transformers' factory)
    (("constant", {"warmup_steps": 7}), "get_constant_schedule_with_warmup", {"num_warmup_steps": 7}),
    (("constant", {}), "get_constant_schedule", {}),
    (("linear", {"warmup_steps": 7}), "get_linear_schedule_with_warmup",
     {"num_warmup_steps": 7, "num_training_steps": STEPS}),
    (("linear", {}), "get_linear_schedule_with_warmup", {"num_warmup_steps": 0, "num_training_steps": STEPS}),
    (("cosine", {"warmup_steps": 7}), "get_cosine_schedule_with_warmup",
     {"num_warmup_steps": 7, "num_training_steps": STEPS}),
    (("cosine", {"warmup_steps": 7, "floor": 0.1}), "get_cosine_with_min_lr_schedule_with_warmup",
     {"num_warmup_steps": 7, "num_training_steps": STEPS, "min_lr_rate": 0.1}),
    (("inverse-sqrt", {"warmup_steps": 7}), "get_inverse_sqrt_schedule", {"num_warmup_steps": 7}),
    (("inverse-sqrt", {"warmup_steps": 7, "timescale": 20}), "get_inverse_sqrt_schedule",
     {"num_warmup_steps": 7, "timescale": 20}),
    (("inverse-sqrt", {}), "get_inverse_sqrt_schedule", {"num_warmup_steps": 0}),
    (("polynomial", {"warmup_steps": 7}), "get_polynomial_decay_schedule_with_warmup",
     {"num_warmup_steps": 7, "num_training_steps": STEPS}),
    (("polynomial", {"warmup_steps": 7, "power": 2.0, "lr_end": 1e-5}), "get_polynomial_decay_schedule_with_warmup",
     {"num_warmup_steps": 7, "num_training_steps": STEPS, "power": 2.0, "lr_end": 1e-5}),
]


@pytest.mark.parity
@pytest.mark.parametrize("ours_, factory, kwargs", SCHEDULE_CASES, ids=lambda v: str(v)[:40])
def test_schedules_give_transformers_lr_at_every_step(ours_, factory, kwargs):
    optimization = pytest.importorskip("transformers.optimization")
    name, options = ours_
    want = hf_lrs(lambda opt: getattr(optimization, factory)(opt, **kwargs))
    got = our_lrs(name, **options)
    assert got == want  # exactly, every step
    assert len(set(got)) > 1 or name == "constant"


def test_the_stages_warmup_steps_is_the_schedules_default():
    assert our_lrs("linear", warmup=7) == our_lrs("linear", warmup_steps=7)
    assert our_lrs("linear", warmup=7)[:3] == pytest.approx([0.0, 1e-3 / 7, 2e-3 / 7], rel=1e-15)


def test_the_default_schedule_is_modkits_former_one():
    """Before schedules were components every stage warmed up from lr/warmup to the peak, then
    fell along a cosine to a tenth of it."""
    def former(step: int, total: int = STEPS, peak: float = 1e-3, warmup: int = 7) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))

    stage = SimpleNamespace(lr=1e-3, steps=STEPS, warmup_steps=7)
    lr_of = schedule_of(resolve_default(get_registry(), "schedule"), stage)
    for n in range(STEPS):
        assert lr_of(n) == pytest.approx(former(n), rel=1e-15, abs=0)  # the same to float rounding
