"""A tiny T5 end to end with a SentencePiece Unigram tokenizer trained as T5's was: named
sentinels for span corruption, '</s>' appended, served by the runtime, and the artifact's
tokenizer.json loaded by transformers' T5TokenizerFast with the same ids."""
from __future__ import annotations

import pytest
from conftest import import_or_skip

import modkit
from modkit.builder.build import build
from modkit.runtime import Runtime

SPEC = """
name = "tiny-t5-unigram"
[tokenizer]
use = "sentencepiece"
vocab_size = 420
extra_ids = 20
special_ids = { pad = 0, eos = 1, unk = 2 }
append_eos = true
train_on = "c.txt"
[backbone]
use = "t5"
d_model = 32
d_kv = 8
d_ff = 64
encoder_layers = 1
decoder_layers = 1
n_heads = 4
extra_ids = 20
[[stages]]
objective = { use = "span-corruption", max_new_tokens = 12 }
data = "c.txt"
steps = 30
batch_size = 8
seq_len = 32
lr = 3e-3
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, corpus_path):
    folder = tmp_path_factory.mktemp("t5")
    (folder / "c.txt").write_text(corpus_path.read_text()[:40_000])
    (folder / "spec.toml").write_text(SPEC)
    manifest = build(folder / "spec.toml", folder / "out", progress=False, echo=lambda m: None)
    return folder / "out", manifest


def test_span_corruption_finds_the_tokenizers_sentinels(artifact):
    out, manifest = artifact
    report = manifest["stages"][0]
    tok = modkit.load_tokenizer(out)
    assert tok.vocab_size == 420 and tok.token_to_id("<extra_id_0>") == 419 and tok.token_to_id("<extra_id_19>") == 400
    assert manifest["components"]["backbone"]["options"]["vocab_size"] == 420  # the sentinels are the tokenizer's
    assert manifest["task"].get("sentinel_base") is None  # named sentinels, not ids past the vocabulary
    assert report["loss_last_10"] < report["loss_first_10"] - 0.5
    [result] = Runtime(out).run(["The module provides <extra_id_0> functions."])
    assert result["generated"].startswith("<extra_id_0>")


def test_artifact_tokenizer_is_t5s(artifact, paragraphs):
    out, _ = artifact
    tok = modkit.load_tokenizer(out)
    assert tok.special_tokens == {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    enc = tok.encode_plus("a text", "and a second")
    assert enc.ids[-1] == 1 and enc.ids.count(1) == 2  # '$A </s> $B </s>'


@pytest.mark.parity
def test_t5_tokenizer_fast_loads_the_artifact_with_equal_ids(artifact, paragraphs):
    transformers = import_or_skip("transformers", "pip install transformers (the dev extra)")
    out, _ = artifact
    tok = modkit.load_tokenizer(out)
    reference = transformers.T5TokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    texts = paragraphs[:200] + ["Fill <extra_id_0> in and <extra_id_3>.", "  spaced   out  ", "ｆｕｌｌ ｗｉｄｔｈ"]
    for text in texts:
        assert reference(text).input_ids == tok.encode_plus(text, allow_special=True).ids, text
        ids = tok.encode(text, allow_special=True)
        assert reference.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True), text


@pytest.mark.parity
def test_exported_folder_loads_in_auto_tokenizer_with_equal_ids(artifact, paragraphs, tmp_path):
    transformers = import_or_skip("transformers", "pip install transformers (the dev extra)")
    from modkit.builder.hf.convert import export_hf

    out, _ = artifact
    dest = export_hf(out, tmp_path / "hf")
    tok = modkit.load_tokenizer(out)
    reference = transformers.AutoTokenizer.from_pretrained(str(dest))
    for text in paragraphs[:100] + ["Fill <extra_id_0> in."]:
        assert reference(text).input_ids == tok.encode_plus(text, allow_special=True).ids, text
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(dest))
    assert model.config.vocab_size == tok.vocab_size
