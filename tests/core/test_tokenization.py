"""modkit.load_tokenizer and the core's templates, truncation and padding."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import modkit
from modkit import ArtifactError
from modkit.tokenization import Template, truncate_pair
from modkit_plugins.tokenizers.bpe import BPEOptions
from modkit_plugins.tokenizers.bpe_model import BPETokenizer
from modkit_plugins.tokenizers.wordpiece import WordPieceOptions
from modkit_plugins.tokenizers.wordpiece_model import WordPieceTokenizer

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def bert(corpus_path):
    return WordPieceTokenizer.train([corpus_path], WordPieceOptions(vocab_size=800))


@pytest.fixture(scope="module")
def bert_reference(bert, tmp_path_factory):
    path = tmp_path_factory.mktemp("bert") / "tokenizer.json"
    bert.save(path)
    return tokenizers.Tokenizer.from_file(str(path))


def test_missing_path_names_it(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        modkit.load_tokenizer(tmp_path / "nope.json")


@pytest.mark.parametrize("name, content, message", [
    ("tokenizer.json", "{not json", "not valid JSON"),
    ("tokenizer.json", json.dumps({"model": {"type": "NoSuchModel", "vocab": []}}), "not a tokenizer"),
    ("tokenizer.json", json.dumps({"model": {"type": "Unigram", "vocab": []}}), "empty vocabulary"),
    ("gpt.tiktoken", "not base64 at all\n", "tiktoken"),
    ("vocab.txt", "hello\nworld\n", "vocab.txt"),
    ("random.bin", "\x00\x01", "not a tokenizer"),
])
def test_corrupt_or_unknown_files_are_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ArtifactError, match=message) as error:
        modkit.load_tokenizer(path)
    assert str(path.name) in str(error.value)


def test_artifact_folder_and_vocab_merges_folder(tmp_path, corpus_path):
    tok = BPETokenizer.train([corpus_path], BPEOptions(style="byte-level", vocab_size=600))
    artifact = tmp_path / "artifact"
    tok.save(artifact / "tokenizer.json")
    write_manifest(artifact, {"name": "bpe", "plugin": "bpe", "version": "0.1.0"})
    assert modkit.load_tokenizer(artifact).encode("hello world") == tok.encode("hello world")
    folder = tmp_path / "gpt2-style"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({t: i for t, i in tok.vocab.items()}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tok.merges))
    assert modkit.load_tokenizer(folder).encode("hello world") == tok.encode("hello world")


def write_manifest(artifact, tokenizer: dict) -> None:
    """A manifest listing the folder's tokenizer.json, as the builder writes one."""
    from modkit.fileio import sha256_file

    modkit.Manifest(format="modkit-artifact", version=1, name="tok", task={"task": "generate"},
                    components={"tokenizer": tokenizer, "backbone": {"name": "gpt"}, "stages": [{"objective": {"name": "clm"}}]},
                    files={"tokenizer.json": sha256_file(artifact / "tokenizer.json")}).write(artifact)


def test_a_changed_artifact_tokenizer_is_refused(tmp_path, corpus_path):
    artifact = tmp_path / "artifact"
    BPETokenizer.train([corpus_path], BPEOptions(vocab_size=300)).save(artifact / "tokenizer.json")
    write_manifest(artifact, {"name": "bpe", "plugin": "bpe", "version": "0.1.0"})
    with open(artifact / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ArtifactError, match="tokenizer.json: sha256 does not match the manifest"):
        modkit.load_tokenizer(artifact)


def test_an_artifact_whose_tokenizer_plugin_is_missing_is_an_error_naming_it(tmp_path, corpus_path):
    # another tokenizer that claims the file could tokenize differently: no silent fallback
    tok = BPETokenizer.train([corpus_path], BPEOptions(style="byte-level", vocab_size=300))
    artifact = tmp_path / "artifact"
    tok.save(artifact / "tokenizer.json")
    write_manifest(artifact, {"name": "fancy-bpe", "plugin": "fancy", "version": "1.2"})
    with pytest.raises(ArtifactError, match="the artifact's tokenizer 'fancy-bpe' \\(plugin 'fancy' 1.2\\) is not "
                                            "installed here; install that plugin"):
        modkit.load_tokenizer(artifact)


def test_loading_does_not_import_torch(tmp_path, corpus_path):
    path = tmp_path / "tokenizer.json"
    WordPieceTokenizer.train([corpus_path], WordPieceOptions(vocab_size=300)).save(path)
    code = (f"import sys, modkit; t = modkit.load_tokenizer({str(path)!r}); t.batch_encode(['a b']);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_truncate_pair_keeps_a_short_text_whole_and_halves_otherwise():
    assert truncate_pair([1] * 10, [1] * 3, 8) == (5, 3)
    assert truncate_pair([1] * 10, [1] * 7, 8) == (4, 4)
    assert truncate_pair([1] * 4, [1] * 4, 5) == (2, 3)
    assert truncate_pair([1] * 4, None, 2) == (2, 0)


@pytest.mark.parametrize("max_length", [6, 9, 20])
def test_pair_truncation_matches_hugging_face(bert, bert_reference, paragraphs, max_length):
    bert_reference.enable_truncation(max_length)
    try:
        for a, b in zip(paragraphs[:100], paragraphs[1:101]):
            ours = bert.encode_plus(a, b, max_length=max_length)
            theirs = bert_reference.encode(a, b)
            assert (ours.ids, ours.type_ids) == (theirs.ids, theirs.type_ids)
    finally:
        bert_reference.no_truncation()


def test_batch_padding_matches_hugging_face(bert, bert_reference, paragraphs):
    texts = paragraphs[:16]
    bert_reference.enable_padding(pad_id=bert.special_id("pad"), pad_token="[PAD]")
    try:
        theirs = bert_reference.encode_batch(texts)
    finally:
        bert_reference.no_padding()
    ours = bert.batch_encode(texts)
    assert ours["input_ids"].dtype == np.int64
    assert ours["input_ids"].tolist() == [e.ids for e in theirs]
    assert ours["attention_mask"].tolist() == [e.attention_mask for e in theirs]
    assert ours["token_type_ids"].tolist() == [e.type_ids for e in theirs]


def test_batch_max_length_padding_left_and_offsets(bert):
    out = bert.batch_encode(["one two", "three"], max_length=6, padding="max_length",
                            padding_side="left", return_offsets=True)
    assert out["input_ids"].shape == (2, 6) and out["offsets"].shape == (2, 6, 2)
    n = len(bert.encode("three"))
    assert out["attention_mask"][1].tolist() == [0] * (4 - n) + [1] * (n + 2)
    assert out["input_ids"][1, 4 - n] == bert.special_id("cls")
    assert out["offsets"][1, -2].tolist()[1] == 5  # the last piece ends at the text's end


def test_template_round_trips_through_hugging_face_json(bert):
    doc = bert.template.to_json(bert.token_to_id)
    assert Template.from_json(doc) == bert.template
    bert_processing = {"type": "BertProcessing", "cls": ["[CLS]", 2], "sep": ["[SEP]", 3]}
    assert Template.from_json(bert_processing) == bert.template


def test_without_template_pairs_concatenate_with_segment_ids(corpus_path):
    tok = BPETokenizer.train([corpus_path], BPEOptions(vocab_size=400))
    e = tok.encode_plus("a b", "c")
    assert e.ids == tok.encode("a b") + tok.encode("c")
    assert e.type_ids == [0] * len(tok.encode("a b")) + [1] * len(tok.encode("c"))
