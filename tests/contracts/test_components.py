"""Every registered component against its kind's contract (modkit.testing)."""
from __future__ import annotations

import pytest

from modkit import load_registry
from modkit.testing import check_backbone, check_peft, check_tokenizer

REGISTRY = load_registry()
SMALL = {"vocab_size": 101, "d_model": 32, "n_layers": 2, "encoder_layers": 2, "decoder_layers": 2, "n_heads": 4,
         "d_kv": 8, "d_ff": 64, "dropout": 0.0}


def small_options(component, wanted: dict):
    fields = component.options.model_fields
    return component.options(**{k: v for k, v in wanted.items() if k in fields})


def tiny_backbones():
    return [pytest.param(REGISTRY.get("backbone", name), id=name) for name in REGISTRY.names("backbone")]


@pytest.mark.parametrize("name", REGISTRY.names("tokenizer"))
def test_tokenizer_contract(name, corpus_path, tmp_path):
    comp = REGISTRY.get("tokenizer", name)
    text = corpus_path.read_text(encoding="utf-8")[:20_000]
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    tokenizer = comp.load().train([tmp_path / "c.txt"], small_options(comp, {"vocab_size": 400}))
    check_tokenizer(tokenizer)


@pytest.mark.parametrize("comp", tiny_backbones())
def test_backbone_contract(comp):
    check_backbone(comp.load()(small_options(comp, SMALL)))


@pytest.mark.parametrize("peft", REGISTRY.names("peft"))
@pytest.mark.parametrize("comp", tiny_backbones())
def test_every_peft_method_on_every_backbone(peft, comp):
    pcomp = REGISTRY.get("peft", peft)
    check_peft(pcomp.load()(pcomp.options()), comp.load()(small_options(comp, SMALL)))
