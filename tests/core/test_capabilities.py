"""A backbone's declared capabilities: the record checks itself, the build and the kit read it."""
from __future__ import annotations

import pytest
import torch

import modkit
from modkit.builder.assembly import options_from_tokenizer
from modkit.errors import UserError
from modkit.interfaces import BackboneCapabilities, capabilities_of
from modkit.testing import check_backbone
from modkit_plugins.backbones.gpt import GPTOptions
from modkit_plugins.backbones.gpt_model import GPT
from modkit_plugins.peft.prompt import PromptOptions
from modkit_plugins.peft.prompt_impl import PromptTuning
from modkit_plugins.tokenizers.bpe import BPEOptions
from modkit_plugins.tokenizers.bpe_model import BPETokenizer


@pytest.fixture(scope="module")
def bpe(corpus_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bpe")
    (tmp / "c.txt").write_text(corpus_path.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    options = BPEOptions(vocab_size=300, special_tokens={"pad": "<pad>", "eos": "<eos>"})
    return BPETokenizer.train([tmp / "c.txt"], options)


@pytest.mark.parametrize("fields, message", [
    ({"inputs": {"segment_ids"}}, "unknown"), ({"decoder_start": "start"}, "not a role"),
    ({"inputs": {"inputs_embeds"}}, "needs token_embedding"),
])
def test_a_wrong_declaration_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        BackboneCapabilities(**fields)


def test_the_build_fills_options_from_the_declaration(bpe):
    assert bpe.special_id("pad") != bpe.special_id("eos")
    registry = modkit.get_registry()
    t5 = registry.get("backbone", "t5")
    options = options_from_tokenizer(t5.options(vocab_size=0, extra_ids=3), bpe, t5.load())
    assert options.vocab_size == bpe.vocab_size + 3  # the declared sentinels, past the tokenizer's ids
    assert options.decoder_start_token_id == bpe.special_id("pad")  # T5 declares decoder_start = "pad"
    bart = registry.get("backbone", "bart")
    assert options_from_tokenizer(bart.options(), bpe, bart.load()).decoder_start_token_id == bpe.special_id("eos")


class Undeclared(GPT):
    """A third-party backbone that declares nothing gets the default record."""

    @classmethod
    def capabilities(cls, options):
        return BackboneCapabilities()


def test_an_undeclared_backbone_gets_the_default_and_prompt_tuning_says_why_not():
    backbone = Undeclared(GPTOptions(vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_positions=16))
    assert capabilities_of(backbone) == BackboneCapabilities()
    with pytest.raises(UserError, match="does not declare inputs_embeds"):
        PromptTuning(PromptOptions(num_virtual_tokens=2)).apply(backbone)


class Overclaiming(GPT):
    @classmethod
    def capabilities(cls, options):
        return BackboneCapabilities(max_positions=options.n_positions * 2)


def test_the_kit_catches_a_max_positions_the_backbone_does_not_have():
    backbone = Overclaiming(GPTOptions(vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_positions=16))
    with pytest.raises((AssertionError, IndexError)):
        check_backbone(backbone, export=False)


class IgnoresEmbeds(GPT):
    def forward(self, input_ids, attention_mask=None, *, inputs_embeds=None, **kwargs):
        if inputs_embeds is not None:
            input_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long)
        return super().forward(input_ids, attention_mask, **kwargs)


def test_the_kit_catches_inputs_embeds_declared_but_not_honoured():
    backbone = IgnoresEmbeds(GPTOptions(vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_positions=16))
    with pytest.raises(AssertionError, match="inputs_embeds"):
        check_backbone(backbone, export=False)
