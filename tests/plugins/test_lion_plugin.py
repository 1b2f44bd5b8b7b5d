"""A third-party optimizer (examples/plugin-lion): the conformance kit, Lion's update rule
computed by hand, and a build that trains with it and resumes exactly."""
from __future__ import annotations


import pytest
import torch
from conftest import import_or_skip
from safetensors.torch import load_file
from specs import killed_after_step, tiny_gpt_parts, write_corpus

import modkit
from modkit.builder.telemetry.metrics import read_metrics
from modkit.builder.training.optim import param_groups
from modkit.testing import check_optimizer


@pytest.fixture(scope="module")
def lion():
    import_or_skip("modkit_lion", "pip install -e examples/plugin-lion")
    return modkit.get_registry().get("optimizer", "lion")


def test_lion_meets_the_optimizer_contract(lion):
    check_optimizer(lion.load(), lion.options())
    check_optimizer(lion.load(), lion.options(betas=(0.95, 0.98), decay_biases_and_norms=True))


def test_lion_steps_by_the_sign_of_the_interpolated_momentum(lion):
    """Chen et al. 2023, Algorithm 2, written out for two steps."""
    weight = torch.nn.Parameter(torch.tensor([[0.5, -0.2], [0.1, 0.0]]))
    model = torch.nn.Module()
    model.weight = weight
    optimizer = lion.load()(param_groups(model, lion.options(betas=(0.9, 0.99)), 0.1, 0.5), lion.options())
    theta, m = weight.detach().clone(), torch.zeros(2, 2)
    for g in (torch.tensor([[1.0, -2.0], [0.0, 3.0]]), torch.tensor([[-0.5, -1.0], [2.0, -3.0]])):
        weight.grad = g.clone()
        optimizer.step()
        c = 0.9 * m + 0.1 * g
        theta = theta - 0.1 * (torch.sign(c) + 0.5 * theta)
        m = 0.99 * m + 0.01 * g
        assert torch.allclose(weight.detach(), theta, atol=1e-7)



def test_a_build_trains_with_lion_and_resumes_exactly(lion, tmp_path, monkeypatch):
    write_corpus(tmp_path, 20_000)
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''name = "lion"
seed = 1
{tiny_gpt_parts(n_positions=32, extra_backbone="dropout = 0.0")}
[[stages]]
objective = {{ use = "clm" }}
data = "corpus.txt"
steps = 8
batch_size = 4
seq_len = 32
lr = 1e-3
weight_decay = 0.1
checkpoint_every = 3
accumulate = 2
optimizer = {{ use = "lion" }}
[export]
onnx = false
''')
    quiet = {"progress": False, "echo": lambda _: None}
    manifest = modkit.build(spec, tmp_path / "whole", **quiet)
    assert manifest["components"]["stages"][0]["optimizer"]["plugin"] == "lion"
    losses = [r["loss"] for r in read_metrics(tmp_path / "whole" / "metrics.jsonl")]
    assert losses[-1] < losses[0] - 0.05
    killed_after_step(5, monkeypatch, lambda: modkit.build(spec, tmp_path / "out", **quiet))
    modkit.build(spec, tmp_path / "out", resume=True, **quiet)
    whole, resumed = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "out"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
