"""LoRA: exact identity at init, merge == unmerged outputs, exact unmerge, parameter count."""
from __future__ import annotations

import pytest
import torch

from modkit import load_registry
from modkit.nn.blocks import iter_roles
from modkit_plugins.backbones.gpt import GPTOptions
from modkit_plugins.backbones.gpt_model import GPT
from modkit_plugins.peft.lora import LoRAOptions
from modkit_plugins.peft.lora_impl import LoRA, LoRALinear


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTOptions(vocab_size=97, d_model=32, n_layers=2, n_heads=4, dropout=0.0)).eval()


def trained_lora(model, targets, r=4):
    method = LoRA(LoRAOptions(r=r, alpha=8, targets=targets))
    modules = method.apply(model)
    with torch.no_grad():  # stand-in for training: make B non-zero so the update matters
        for m in modules:
            m.B.normal_(std=0.1)
    return method, modules


def test_fresh_lora_changes_nothing():
    model, ids = tiny_gpt(), torch.randint(0, 97, (2, 9))
    before = model(ids).last_hidden_state
    LoRA(LoRAOptions(targets=["attn.*", "ffn.*"])).apply(model)
    assert torch.equal(model(ids).last_hidden_state, before)


@pytest.mark.parametrize("targets", [["attn.q", "attn.v"], ["attn.*"], ["*"], ["ffn.up", "ffn.down"]])
def test_merged_equals_unmerged_and_unmerge_is_exact(targets):
    # float64, so the comparison measures the merge and not fp32 rounding of a different sum order
    model, ids = tiny_gpt().double(), torch.randint(0, 97, (3, 11))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    method, modules = trained_lora(model, targets)
    unmerged = model(ids).last_hidden_state
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in wrapped:
        m.merge()
    assert (model(ids).last_hidden_state - unmerged).abs().max() < 1e-6
    for m in wrapped:
        m.unmerge()
    assert torch.equal(model(ids).last_hidden_state, unmerged)
    for m in wrapped:  # the base weights are restored bit for bit
        name = next(k for k, v in model.named_modules() if v is m)
        key = name.replace(".base", "") + ".weight"
        assert torch.equal(m.base.weight, original[key])
    method.merge(model)  # merge_and_unload: no LoRA module left, same outputs
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert (model(ids).last_hidden_state - unmerged).abs().max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_lora_weights_take_the_base_layers_dtype_and_device(dtype):
    model, ids = tiny_gpt().to(dtype), torch.randint(0, 97, (2, 9))
    before = model(ids).last_hidden_state
    modules = LoRA(LoRAOptions(targets=["attn.*", "ffn.*"])).apply(model)
    assert {p.dtype for m in modules for p in m.parameters()} == {dtype}
    assert torch.equal(model(ids).last_hidden_state, before)  # runs, and is still the identity
    with torch.device("meta"):  # a backbone built on the meta device (checks before training)
        meta = GPT(GPTOptions(vocab_size=97, d_model=32, n_layers=2, n_heads=4))
    assert {p.device.type for m in LoRA(LoRAOptions()).apply(meta) for p in m.parameters()} == {"meta"}


@pytest.mark.parametrize("first_merged", [0, 1])
def test_two_loras_on_one_layer_merge_to_what_they_computed(first_merged):
    model, ids = tiny_gpt(seed=1).double(), torch.randint(0, 97, (3, 11))
    plain = model(ids).last_hidden_state
    methods = [trained_lora(model, ["attn.q", "attn.v"])[0], trained_lora(model, ["attn.*"], r=2)[0]]
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 2 * 2 + 2 * 4  # stacked on q and v
    unmerged = model(ids).last_hidden_state
    assert (unmerged - plain).abs().max() > 1e-3  # both updates matter
    for method in (methods if first_merged == 0 else methods[::-1]):
        method.merge(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert (model(ids).last_hidden_state - unmerged).abs().max() < 1e-9


def test_trainable_count_is_r_times_fan_in_plus_fan_out():
    model = tiny_gpt()
    r = 4
    _, modules = trained_lora(model, ["attn.q", "attn.v", "ffn.up"], r=r)
    expected = 2 * (r * (32 + 32) * 2 + r * (32 + 128))  # per layer: q, v (32->32), up (32->128)
    assert sum(p.numel() for m in modules for p in m.parameters()) == expected
    roles = sorted(role for _, _, role in iter_roles(model))
    assert roles.count("attn.q") == 2


def test_targets_that_match_nothing_are_a_user_error():
    from modkit import UserError

    with pytest.raises(UserError, match="match no layer; roles here: attn.k, attn.o"):
        LoRA(LoRAOptions(targets=["cross.q"])).apply(tiny_gpt())


def test_targets_must_look_like_roles():
    with pytest.raises(Exception, match="not a role pattern"):
        LoRAOptions(targets=["q_proj"])


def test_lora_is_registered_with_its_options():
    comp = load_registry().get("peft", "lora")
    assert comp.load() is LoRA and comp.options is LoRAOptions


def test_check_peft_compares_merged_values_not_shapes(monkeypatch):
    from modkit.testing import check_peft

    check_peft(LoRA(LoRAOptions(targets=["attn.*"])), tiny_gpt())
    monkeypatch.setattr(LoRALinear, "merge", lambda self: None)  # a merge that drops the update
    with pytest.raises(AssertionError, match="merge changes the outputs by"):
        check_peft(LoRA(LoRAOptions(targets=["attn.*"])), tiny_gpt())
