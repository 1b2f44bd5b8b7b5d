"""Presets build the published shapes: parameter counts on the meta device (no memory, fast)."""
from __future__ import annotations

import pytest
import torch

import modkit

# published counts; BERT's are BertModel's (with pooler, without pretraining heads)
PUBLISHED = {
    "openai-gpt": 116_534_784,
    "gpt2": 124_439_808,  # tied embeddings: the LM head adds nothing
    "gpt2-medium": 354_823_168,
    "bert-base": 109_482_240,
    "bert-large": 335_141_888,
    "bert-tiny": 4_385_920,
}


def build_preset(name: str, **overrides):
    component, values = modkit.get_registry().resolve("backbone", name)
    options = component.options(**{**values, **overrides})
    with torch.device("meta"):
        return component.load()(options)


def count(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("mlm_head."))


@pytest.mark.parametrize("name", PUBLISHED)
def test_preset_has_the_published_parameter_count(name):
    assert count(build_preset(name)) == PUBLISHED[name]


def test_bert_mlm_head_is_the_only_extra():
    with_head = sum(p.numel() for p in build_preset("bert-base").parameters())
    d, v = 768, 30522
    assert with_head - PUBLISHED["bert-base"] == d * d + d + 2 * d + v  # dense, LayerNorm, bias


@pytest.mark.parametrize("name", PUBLISHED)
def test_preset_matches_transformers_count(name):
    transformers = pytest.importorskip("transformers")
    from modkit.builder.hf.convert import format_for

    model = build_preset(name)
    config, _ = format_for(model).to_hf(model)
    hf_config = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        theirs = transformers.AutoModel.from_config(hf_config)
    assert sum(p.numel() for p in theirs.parameters()) == PUBLISHED[name]
