"""Prefix tuning: placement, parameter counts, padding, the KV cache, beam search, freezing."""
from __future__ import annotations

import pytest
import torch

from modkit import UserError, load_registry
from modkit.nn.blocks import Attention
from modkit.nn.generation import beam_search, generate_seq2seq
from modkit.testing import check_peft
from modkit_plugins.peft.prefix import PrefixOptions
from modkit_plugins.peft.prefix_impl import PrefixSlot, PrefixTuning
from peft_models import FAMILIES, hidden, inputs, tiny_backbone

D = 32  # the tiny backbones' width (4 heads of 8)


def prefixed(family, seed=0, **options):
    model = tiny_backbone(family, seed)
    method = PrefixTuning(PrefixOptions(**options))
    modules = method.apply(model)
    return model, method, modules


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_conforms_and_changes_outputs(family):
    model = tiny_backbone(family)
    batch = inputs(model)
    before = hidden(model, batch)
    check_peft(PrefixTuning(PrefixOptions(length=3, projection=16)), model)
    assert (hidden(model, batch) - before).abs().max() > 1e-3


@pytest.mark.parametrize("family, placement, expected", [
    ("gpt", "peft", 2), ("bert", "peft", 2), ("bart", "peft", 2), ("t5", "peft", 2),  # decoder self-attn
    ("bart", "all", 2 + 2 + 2), ("t5", "all", 6), ("gpt", "all", 2),
])
def test_placement_chooses_the_attention_layers(family, placement, expected):
    model, _, _ = prefixed(family, placement=placement, length=2)
    slots = [m for m in model.modules() if isinstance(m, Attention) and m.prefix is not None]
    assert len(slots) == expected
    if family in ("bart", "t5") and placement == "peft":
        assert all(s in {b.attn for b in model.decoder_blocks} for s in slots)


@pytest.mark.parametrize("projection", [0, 16])
def test_trainable_parameters_are_the_prefixes_or_their_mlp(projection):
    length, layers = 5, 2
    _, _, modules = prefixed("gpt", length=length, projection=projection)
    n = sum(p.numel() for m in modules for p in m.parameters())
    kv = layers * 2 * D
    expected = length * kv if not projection else length * D + (D * projection + projection) + (projection * kv + kv)
    assert n == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_is_masked_with_a_prefix(family):
    model, _, _ = prefixed(family, length=4, projection=8, placement="all")
    batch = inputs(model)
    other = dict(batch, input_ids=batch["input_ids"].clone())
    other["input_ids"][1, -3:] = 5  # different padding content: the real positions must not notice
    a, b = hidden(model, batch), hidden(model, other)
    if family in ("bart", "t5"):  # the decoder reads every position; compare the encoder instead
        a, b = model.encode(batch["input_ids"], batch["attention_mask"]), model.encode(
            other["input_ids"], other["attention_mask"])
    keep = batch["attention_mask"].bool()
    assert (a - b)[keep].abs().max() < 1e-6


@pytest.mark.parametrize("projection, positions", [(0, "none"), (16, "none"), (0, "peft")])
def test_gpt_cache_with_a_prefix_equals_the_full_forward(projection, positions):
    model, _, _ = prefixed("gpt", length=3, projection=projection, positions=positions)
    ids = torch.randint(3, 97, (2, 8))
    full = model.lm_logits(model(ids).last_hidden_state)
    out = model(ids[:, :5], use_cache=True)
    cache, steps = out.past_key_values, []
    assert cache[0][0][0].shape[2] == 5  # the prefix is not in the cache
    for t in range(5, 8):
        out = model(ids[:, t:t + 1], torch.ones(2, t + 1, dtype=torch.long), past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        steps.append(model.lm_logits(out.last_hidden_state[:, -1]))
    assert (torch.stack(steps, 1) - full[:, 5:]).abs().max() < 1e-5


def test_gpt_beam_search_with_cache_equals_without():
    model, _, _ = prefixed("gpt", length=3)
    prompt = torch.randint(3, 97, (1, 4)).repeat_interleave(3, 0)

    def cached(tokens, cache):
        out = model(tokens, past_key_values=cache, use_cache=True)
        return model.lm_logits(out.last_hidden_state[:, -1]), out.past_key_values

    def uncached(tokens, seen):
        seen = tokens if seen is None else torch.cat([seen, tokens], 1)
        return model.lm_logits(model(seen).last_hidden_state[:, -1]), seen

    def run(step):
        return beam_search(step, prompt, num_beams=3, max_new_tokens=6)

    assert torch.equal(run(cached), beam_search(lambda t, s: uncached(t, s), prompt, num_beams=3,
                                                max_new_tokens=6))


@pytest.mark.parametrize("family", ["bart", "t5"])
@pytest.mark.parametrize("placement", ["peft", "all"])
@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("positions", ["none", "peft"])
def test_seq2seq_generation_with_cache_equals_without(family, placement, num_beams, positions):
    model, _, _ = prefixed(family, length=3, projection=8, placement=placement, positions=positions)
    batch = inputs(model)
    kwargs = dict(max_new_tokens=6, decoder_start_token_id=0, num_beams=num_beams)
    cached = generate_seq2seq(model, batch["input_ids"], batch["attention_mask"], **kwargs)
    uncached = generate_seq2seq(model, batch["input_ids"], batch["attention_mask"], use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("projection", [0, 16])
def test_merge_freezes_the_prefixes_to_constants(family, projection):
    model, method, modules = prefixed(family, length=3, projection=projection, placement="all")
    with torch.no_grad():
        for p in modules[0].parameters():
            p.normal_(std=0.5)
    batch = inputs(model)
    before = hidden(model, batch)
    method.merge(model)
    assert not hasattr(model, "prefix_encoder")
    assert not any(p.requires_grad for p in model.buffers())
    keys = [k for k in model.state_dict() if k.endswith("prefix.key")]
    assert keys and all(model.state_dict()[k].shape[1:] == (3, 8) for k in keys)  # (heads, length, head_dim)
    assert (hidden(model, batch) - before).abs().max() < 1e-6


def test_a_second_prefix_on_the_same_layers_is_a_user_error():
    model, method, _ = prefixed("gpt")
    with pytest.raises(UserError, match="already have a prefix"):
        PrefixTuning(PrefixOptions()).apply(model)
    method.merge(model)  # frozen, the slot is still taken
    with pytest.raises(UserError, match="already have a prefix"):
        PrefixTuning(PrefixOptions()).apply(model)


def test_positions_peft_moves_the_tokens_after_the_prefix():
    from modkit.nn.blocks import prefix_positions

    model, _, _ = prefixed("gpt", length=4, positions="peft")
    assert prefix_positions(model.blocks) == 4
    model, _, _ = prefixed("gpt", length=4)
    assert prefix_positions(model.blocks) == 0


def test_prefix_is_registered_with_its_options():
    comp = load_registry().get("peft", "prefix")
    assert comp.load() is PrefixTuning and comp.options is PrefixOptions
    assert all(isinstance(m, PrefixSlot) for m in prefixed("bert")[2][1:])
