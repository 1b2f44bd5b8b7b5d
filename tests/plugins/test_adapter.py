"""Adapters: identity when fresh, 2dm+d+m parameters each, placements, composition with LoRA."""
from __future__ import annotations

import pytest
import torch

from modkit import UserError, load_registry
from modkit.nn.blocks import iter_roles
from modkit.testing import check_peft
from modkit_plugins.peft.adapter import AdapterOptions
from modkit_plugins.peft.adapter_impl import AdapterLayer, Adapters, Bottleneck
from modkit_plugins.peft.lora import LoRAOptions
from modkit_plugins.peft.lora_impl import LoRA, LoRALinear
from peft_models import FAMILIES, hidden, inputs, tiny_backbone


def perturb(modules, std=0.1, seed=5):
    """Stand-in for training: random non-zero weights everywhere in the method's modules."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_adapters_leave_outputs_unchanged(family):
    model = tiny_backbone(family)
    batch = inputs(model)
    before = hidden(model, batch)
    Adapters(AdapterOptions(bottleneck=8, targets=["*.o", "ffn.down"])).apply(model)
    assert (hidden(model, batch) - before).abs().max() <= 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_conform_and_change_outputs_once_trained(family):
    model = tiny_backbone(family)
    batch = inputs(model)
    before = hidden(model, batch)
    method = Adapters(AdapterOptions(bottleneck=4))
    check_peft(method, model)
    perturb([m for m in model.modules() if isinstance(m, Bottleneck)])
    assert (hidden(model, batch) - before).abs().max() > 1e-3


@pytest.mark.parametrize("d, m", [(32, 4), (32, 7), (48, 16)])
def test_each_adapter_has_2dm_plus_d_plus_m_parameters(d, m):
    model = tiny_backbone("gpt", d_model=d, n_heads=4)
    modules = Adapters(AdapterOptions(bottleneck=m)).apply(model)
    assert len(modules) == 2 * 2  # houlsby: attn.o and ffn.down in each of 2 layers
    for adapter in modules:
        assert sum(p.numel() for p in adapter.parameters()) == 2 * d * m + d + m


@pytest.mark.parametrize("placement, family, expected", [
    ("houlsby", "gpt", ["attn.o", "ffn.down"]),
    ("pfeiffer", "gpt", ["ffn.down"]),
    ("houlsby", "bart", ["attn.o", "ffn.down"]),  # cross-attention only when targeted
])
def test_placements_wrap_the_roles_they_name(placement, family, expected):
    model = tiny_backbone(family)
    Adapters(AdapterOptions(placement=placement, bottleneck=4)).apply(model)
    wrapped = sorted({role for parent, name, role in iter_roles(model)
                      if isinstance(getattr(parent, name), AdapterLayer)})
    assert wrapped == expected


def test_cross_attention_output_can_be_targeted():
    model = tiny_backbone("bart")
    modules = Adapters(AdapterOptions(bottleneck=4, targets=["cross.o"])).apply(model)
    assert len(modules) == 2  # one per decoder layer


def test_train_layer_norms_returns_the_norms_too():
    model = tiny_backbone("t5")
    modules = Adapters(AdapterOptions(bottleneck=4, train_layer_norms=True)).apply(model)
    assert sum(isinstance(m, Bottleneck) for m in modules) == 2 * 2 + 2 * 2
    assert any(type(m).__name__ == "RMSNorm" for m in modules)


def test_a_second_adapter_on_the_same_layer_is_a_user_error():
    model = tiny_backbone("gpt")
    Adapters(AdapterOptions(bottleneck=4)).apply(model)
    with pytest.raises(UserError, match="attn.o already has an adapter"):
        Adapters(AdapterOptions(bottleneck=4, placement="houlsby")).apply(model)


def test_targets_that_match_nothing_are_a_user_error():
    with pytest.raises(UserError, match="match no layer"):
        Adapters(AdapterOptions(targets=["cross.o"])).apply(tiny_backbone("gpt"))


@pytest.mark.parametrize("lora_first", [True, False])
def test_lora_composes_with_adapters_on_the_same_layer_and_merges_exactly(lora_first):
    model = tiny_backbone("gpt").double()  # so the comparison measures the merge, not fp32 rounding
    batch = {"input_ids": inputs(model)["input_ids"]}
    lora = LoRA(LoRAOptions(r=2, alpha=4, targets=["attn.o", "attn.q"]))
    adapters = Adapters(AdapterOptions(bottleneck=4))
    methods = [lora, adapters] if lora_first else [adapters, lora]
    modules = [mod.double() for method in methods for mod in method.apply(model)]
    perturb(modules)
    unmerged = hidden(model, batch)
    lora.merge(model)
    adapters.merge(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert sum(isinstance(m, AdapterLayer) for m in model.modules()) == 4  # adapters stay
    assert (hidden(model, batch) - unmerged).abs().max() < 1e-10


def test_adapter_is_registered_with_its_options():
    comp = load_registry().get("peft", "adapter")
    assert comp.load() is Adapters and comp.options is AdapterOptions
    with pytest.raises(Exception, match="not a role pattern"):
        AdapterOptions(targets=["output"])
