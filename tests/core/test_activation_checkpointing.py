"""activation_checkpointing = true: each block recomputes its activations in the backward pass;
outputs, gradients and trained weights stay what they were."""
from __future__ import annotations

import pytest
import torch

import modkit.builder.build as build_module
from safetensors.torch import load_file

from modkit.builder.training.sharding import block_class, blocks_of, checkpoint_activations
from peft_models import FAMILIES, inputs, tiny_backbone
from test_ddp import cli_build
from test_train import build_weights, lm_spec, max_diff


def _forward_backward(backbone, batch):
    torch.manual_seed(0)  # the same dropout masks both times
    out = backbone(**batch).last_hidden_state
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}
    backbone.zero_grad(set_to_none=True)
    return out.detach(), grads


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_and_gradients_equal_without_it_dropout_included(family):
    backbone = tiny_backbone(family, dropout=0.1).train()
    batch = inputs(backbone)
    plain_out, plain_grads = _forward_backward(backbone, batch)
    blocks = blocks_of(backbone, block_class(backbone))
    assert len(blocks) >= 2
    undo = checkpoint_activations(blocks)
    saved = []  # tensors the forward keeps for backward: fewer with checkpointing
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        checked_out, checked_grads = _forward_backward(backbone, batch)
    undo()
    assert torch.equal(plain_out, checked_out)
    assert plain_grads.keys() == checked_grads.keys()
    assert max((plain_grads[k] - checked_grads[k]).abs().max().item() for k in plain_grads) < 1e-6
    assert "forward" not in vars(blocks[0])  # undone: the class's forward again
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(-t.numel()) or t, lambda t: t):
        _forward_backward(backbone, batch)
    kept_with = sum(n for n in saved if n > 0)
    kept_without = -sum(n for n in saved if n < 0)
    assert kept_with < kept_without / 2


def test_a_build_with_it_trains_the_same_weights(tmp_path):
    spec = lm_spec(tmp_path, steps=4)
    plain = build_weights(spec, tmp_path / "plain")
    checked = build_weights(spec, tmp_path / "checked", overrides=["stages[0].activation_checkpointing=true"])
    assert max_diff(plain, checked) < 1e-6


def test_under_ddp_two_processes_equal_one(tmp_path):
    spec = lm_spec(tmp_path, steps=4)
    done = cli_build(spec, tmp_path / "two", "--nproc", "2", "--set", "stages[0].activation_checkpointing=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_diff(build_weights(spec, tmp_path / "one"), load_file(str(tmp_path / "two" / "model.safetensors"))) < 1e-5


class Interrupt(Exception):
    pass


def test_a_resume_may_switch_it_and_trains_the_same_weights(tmp_path, monkeypatch):
    """A build interrupted without it and resumed with it (say, after running out of memory)
    ends with the weights of the uninterrupted build: the resume fingerprint leaves it free."""
    spec = lm_spec(tmp_path, steps=6, extra_stage="checkpoint_every = 2")
    whole = build_weights(spec, tmp_path / "whole")
    real = build_module.train_stage

    def crashing(*args, on_step, **kw):
        def boom(record):
            on_step(record)
            if record.step == 5:  # after the checkpoint at step 4
                raise Interrupt
        return real(*args, on_step=boom, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(build_module, "train_stage", crashing)
        with pytest.raises(Interrupt):
            build_weights(spec, tmp_path / "out")
    resumed = build_weights(spec, tmp_path / "out", resume=True, overrides=["stages[0].activation_checkpointing=true"])
    assert max_diff(whole, resumed) < 1e-6
