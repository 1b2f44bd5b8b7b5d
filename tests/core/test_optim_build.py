"""Optimizers, schedules, clipping and recipes in real builds: spec errors, the manifest, the
lr and gradient norm in metrics.jsonl, exact resume with every built-in optimizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import modkit
from modkit.builder.telemetry.metrics import read_metrics
from modkit.errors import SpecError, UserError
from modkit.spec import load_spec
from specs import killed_after_step, tiny_gpt_parts, write_corpus


def lm_spec(folder: Path, stage: str = "", *, steps: int = 8, name: str = "spec.toml") -> Path:
    """A one-stage clm build of a tiny GPT without dropout or ONNX; ``stage`` adds stage keys."""
    if not (folder / "corpus.txt").exists():
        write_corpus(folder, 20_000)
    spec = folder / name
    spec.write_text(f'''
name = "optim"
seed = 3
{tiny_gpt_parts(n_positions=32, extra_backbone="dropout = 0.0")}
[[stages]]
objective = {{ use = "clm" }}
data = "corpus.txt"
steps = {steps}
batch_size = 4
seq_len = 32
lr = 1e-3
checkpoint_every = 3
{stage}
[export]
onnx = false
''')
    return spec


def build(spec: Path, out: Path, **kw) -> dict[str, torch.Tensor]:
    modkit.build(spec, out, progress=False, echo=lambda _: None, **kw)
    return load_file(str(out / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("stage, key, words", [
    ('optimizer = { use = "adamx" }', "stages[0].optimizer.use", "did you mean 'adam'"),
    ('optimizer = { use = "adamw", beta = [0.9, 0.9] }', "stages[0].optimizer.beta", "did you mean 'betas'"),
    ('optimizer = { use = "adamw", betas = [0.9, 1.5] }', "stages[0].optimizer.betas", "[0, 1)"),
    ('optimizer = { use = "sgd", nesterov = true }', "stages[0].optimizer.nesterov", "momentum > 0"),
    ('schedule = { use = "cosin" }', "stages[0].schedule.use", "did you mean 'cosine'"),
    ('schedule = { use = "linear", warmup_steps = 3 }\nwarmup_steps = 2', "stages[0].warmup_steps", "once"),
    ('recipe = "bert-pretrian"', "stages[0].recipe", "did you mean 'bert-pretrain'"),
])
def test_spec_errors_name_the_key(tmp_path, stage, key, words):
    with pytest.raises(SpecError) as e:
        load_spec(lm_spec(tmp_path, stage))
    assert any(loc == key and words in msg for loc, msg in e.value.problems), e.value.problems


def test_a_schedule_that_cannot_fit_the_stage_fails_before_training(tmp_path):
    spec = lm_spec(tmp_path, 'schedule = { use = "polynomial", lr_end = 0.01 }')
    with pytest.raises(UserError, match=r"stages\[0\]\.schedule: lr_end \(0.01\) must be below the stage's lr"):
        modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    assert not (tmp_path / ".out.work").exists()


def test_chosen_optimizer_and_schedule_train_and_are_recorded(tmp_path):
    spec = lm_spec(tmp_path, 'optimizer = { use = "sgd", momentum = 0.9, nesterov = true }\n'
                             'schedule = { use = "linear", warmup_steps = 2 }\nmax_grad_norm = 0.5', steps=6)
    out = tmp_path / "out"
    build(spec, out)
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["spec"]["stages"][0]
    assert stage["optimizer"]["use"] == "sgd" and stage["optimizer"]["nesterov"] is True
    assert stage["schedule"] == {"use": "linear", "warmup_steps": 2, "warmup_ratio": None, "warmup_from_zero": True}
    assert stage["max_grad_norm"] == 0.5
    lrs = [r["lr"] for r in read_metrics(out / "metrics.jsonl")]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 0.75e-3, 0.5e-3, 0.25e-3], rel=1e-12)


def test_the_default_stage_keeps_modkits_former_optimizer_and_schedule(tmp_path):
    spec = load_spec(lm_spec(tmp_path))
    assert spec.optimizers[0].component.name == "adamw" and spec.optimizers[0].options.betas == (0.9, 0.98)
    assert spec.schedules[0].component.name == "cosine" and spec.schedules[0].options.floor == 0.1
    assert spec.schedules[0].options.warmup_from_zero is False


def test_grad_clip_is_still_read_as_max_grad_norm(tmp_path):
    assert load_spec(lm_spec(tmp_path, "grad_clip = 0.25")).model.stages[0].max_grad_norm == 0.25


def test_metrics_report_the_norm_before_clipping_and_clipping_acts(tmp_path):
    clipped = build(lm_spec(tmp_path, "max_grad_norm = 0.01", steps=4), tmp_path / "clipped")
    norms = [r["grad_norm"] for r in read_metrics(tmp_path / "clipped" / "metrics.jsonl")]
    assert len(norms) == 4 and all(n > 0.01 for n in norms)  # the norm as it was, not as clipped
    free = build(lm_spec(tmp_path, "max_grad_norm = 0", steps=4), tmp_path / "free")
    assert [r["grad_norm"] for r in read_metrics(tmp_path / "free" / "metrics.jsonl")][0] == pytest.approx(norms[0])
    assert max_diff(clipped, free) > 1e-4


def test_lr_multipliers_and_decay_groups_are_options(tmp_path):
    spec = lm_spec(tmp_path, 'optimizer = { use = "adamw", decay_biases_and_norms = true, '
                             'lr_multipliers = { "backbone.blocks.0.*" = 0.0 } }', steps=3)
    from modkit.builder.training.optim import param_groups
    from modkit.nn.model import ModkitModel

    res = load_spec(spec).optimizers[0]
    model = ModkitModel(torch.nn.ModuleDict({"blocks": torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])}))
    groups = param_groups(model, res.options, 1e-3, 0.1)
    assert [(g["lr_scale"], g["weight_decay"], len(g["params"])) for g in groups] == [
        (1.0, 0.1, 2), (1.0, 0.0, 0), (0.0, 0.1, 2)]
    trained = build(spec, tmp_path / "out")
    untrained = build(lm_spec(tmp_path, steps=0, name="zero.toml"), tmp_path / "zero")
    frozen = [k for k in trained if ".blocks.0." in k]
    assert frozen and all(torch.equal(trained[k], untrained[k]) for k in frozen)  # lr × 0: never moved
    assert max_diff({k: trained[k] for k in trained if ".blocks.1." in k}, untrained) > 1e-4



RESUME = [
    'optimizer = { use = "adam" }\nschedule = { use = "inverse-sqrt", warmup_steps = 2 }',
    'optimizer = { use = "adamw", amsgrad = true }\nschedule = { use = "cosine", warmup_steps = 2 }',
    'optimizer = { use = "sgd", momentum = 0.9, nesterov = true }\nschedule = { use = "polynomial", power = 2.0 }',
    'optimizer = { use = "adafactor", beta1 = 0.9, relative_step = true, scale_parameter = true }',
    'optimizer = { use = "adafactor" }\nschedule = { use = "linear" }',
]


@pytest.mark.parametrize("stage", RESUME, ids=["adam", "adamw", "sgd", "adafactor-relative", "adafactor"])
def test_killed_and_resumed_equals_uninterrupted_for_every_optimizer(tmp_path, monkeypatch, stage):
    """Killed at step 5 (after the checkpoint at step 3) under gradient accumulation, resumed:
    the weights are those of the build that was never interrupted, bit for bit."""
    spec = lm_spec(tmp_path, stage + "\naccumulate = 2")
    whole = build(spec, tmp_path / "whole")
    killed_after_step(5, monkeypatch, lambda: build(spec, tmp_path / "out"))
    resumed = build(spec, tmp_path / "out", resume=True)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


RECIPES = ["gpt1-pretrain", "gpt1-finetune", "bert-pretrain", "bert-glue", "bart-finetune", "t5-pretrain",
           "t5-finetune"]


def recipe_spec(folder: Path, recipe: str, stage: str = "", steps: int = 8) -> Path:
    """A stage with ``recipe`` on an objective that takes the recipe's objective options."""
    (folder / "pairs.jsonl").write_text("".join(json.dumps({"source": f"w{i} x", "target": f"w{i}", "text": f"w{i} x",
                                                            "label": "ab"[i % 2]}) + "\n" for i in range(40)))
    classify = 'objective = { use = "classify", labels = ["a", "b"] }\ndata = "pairs.jsonl"'
    objective = classify if recipe in ("gpt1-finetune", "bart-finetune") else ""
    spec = lm_spec(folder, f'recipe = "{recipe}"\n{stage}', steps=steps, name=f"{recipe}.toml")
    if objective:
        text = spec.read_text().replace('objective = { use = "clm" }\ndata = "corpus.txt"', objective)
        spec.write_text(text)
    return spec


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_resolves_and_the_spec_overrides_it_key_by_key(tmp_path, recipe):
    spec = load_spec(recipe_spec(tmp_path, recipe))
    stage = spec.model.stages[0]
    assert stage.recipe == recipe and stage.lr == 1e-3 and stage.batch_size == 4  # the spec's own keys win
    assert spec.optimizers[0].component.name in ("adamw", "adafactor")


def test_a_recipes_tables_merge_with_the_stages(tmp_path):
    spec = load_spec(recipe_spec(tmp_path, "bert-pretrain", 'optimizer = { eps = 1e-8 }\nwarmup_steps = 2'))
    assert spec.optimizers[0].component.name == "adamw"
    assert spec.optimizers[0].options.betas == (0.9, 0.999) and spec.optimizers[0].options.eps == 1e-8
    assert spec.schedules[0].component.name == "linear" and spec.schedules[0].options.warmup_steps == 2
    spec = load_spec(recipe_spec(tmp_path, "bert-pretrain", 'optimizer = { use = "sgd" }'))
    assert spec.optimizers[0].component.name == "sgd"  # another component: the recipe's options do not carry
    spec = load_spec(recipe_spec(tmp_path, "bart-finetune"))
    assert spec.objectives[0][0].options.label_smoothing == 0.1 and spec.model.stages[0].max_grad_norm == 0.1



def test_a_recipes_objective_options_on_a_stage_of_several_objectives_are_an_error(tmp_path):
    """gpt1-finetune's objective options were dropped without a word when the stage listed
    several objectives; which one they are for is the user's to say."""
    spec = recipe_spec(tmp_path, "gpt1-finetune")
    text = spec.read_text().replace('objective = { use = "classify", labels = ["a", "b"] }',
                                    'objective = [{ use = "classify", labels = ["a", "b"] }, { use = "clm" }]')
    spec.write_text(text)
    with pytest.raises(SpecError, match=r"stages\[0\]\.objective: recipe 'gpt1-finetune' sets objective options "
                                        r"\(aux_lm_weight, dropout\) for a single objective, and this stage lists several"):
        load_spec(spec)

def test_t5_recipe_gives_t5s_learning_rate(tmp_path):
    from types import SimpleNamespace

    from modkit.builder.training.optim import schedule_of

    spec = load_spec(recipe_spec(tmp_path, "t5-pretrain"))
    lr_of = schedule_of(spec.schedules[0], SimpleNamespace(lr=0.01, steps=50_000, warmup_steps=0))
    for n in (0, 1, 9_999, 10_000, 10_001, 40_000):
        assert lr_of(n) == pytest.approx(1 / max(n, 10_000) ** 0.5, rel=1e-14)  # §3.1.2: 1/sqrt(max(n, k))


def test_warmup_ratio_rounds_up_as_transformers(tmp_path):
    from types import SimpleNamespace

    from modkit.builder.training.optim import schedule_of

    spec = load_spec(lm_spec(tmp_path, 'schedule = { use = "linear", warmup_ratio = 0.1 }'))
    lr_of = schedule_of(spec.schedules[0], SimpleNamespace(lr=1.0, steps=25, warmup_steps=0))
    assert [lr_of(n) for n in range(4)] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])  # ceil(2.5) = 3 steps


def test_a_tiny_build_trains_with_a_recipe(tmp_path):
    spec = recipe_spec(tmp_path, "t5-finetune", steps=4)
    weights = build(spec, tmp_path / "out")
    assert all(torch.isfinite(v).all() for v in weights.values())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["spec"]["stages"][0]["optimizer"]["use"] == "adafactor"
    assert manifest["spec"]["stages"][0]["recipe"] == "t5-finetune"


def test_list_and_info_show_optimizers_schedules_and_recipes():
    from click.testing import CliRunner

    from modkit.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["list", "--kind", "optimizer"]).output
    assert all(name in listed for name in ("adam ", "adamw", "sgd", "adafactor"))
    listed = runner.invoke(main, ["list", "--kind", "schedule"]).output
    assert all(name in listed for name in ("constant", "linear", "cosine", "inverse-sqrt", "polynomial"))
    info = runner.invoke(main, ["info", "adafactor"]).output
    assert "relative_step: bool (default False)" in info and "lr_multipliers" in info
    assert "t5-pretrain" in runner.invoke(main, ["list", "--kind", "recipe"]).output
    recipe = runner.invoke(main, ["info", "t5-pretrain"])
    assert recipe.exit_code == 0 and "optimizer = {'use': 'adafactor'}" in recipe.output
