"""The ``tokenize`` click group, run with click's CliRunner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import modkit
from modkit import UserError
from modkit.cli.tokenize import tokenize


def run(*args, ok=True):
    result = CliRunner().invoke(tokenize, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_train_then_encode(tmp_path, corpus_path, kind):
    out = tmp_path / "tokenizer.json"
    result = run("train", "--kind", kind, "--vocab-size", 500, corpus_path, "-o", out)
    assert "wrote" in result.output
    tok = modkit.load_tokenizer(out)
    assert tok.vocab_size == 500
    ids = run("encode", out, "--text", "the module returns").output.split()
    assert [int(i) for i in ids] == tok.encode("the module returns")
    doc = json.loads(run("encode", out, "--file", corpus_path, "--format", "json").output)
    assert doc["ids"] == tok.encode(corpus_path.read_text())
    assert len(doc["offsets"]) == len(doc["ids"])
    tokens = run("encode", out, "--text", "the module", "--format", "tokens").output.split("\n")
    assert tokens[: len(tok.encode("the module"))] == [tok.id_to_token(i) for i in tok.encode("the module")]


def test_style_option_reaches_bpe(tmp_path, corpus_path):
    out = tmp_path / "tokenizer.json"
    run("train", "--style", "byte-level", "--vocab-size", 400, corpus_path, "-o", out)
    assert modkit.load_tokenizer(out).style == "byte-level"


@pytest.mark.parametrize("args, message", [
    (["train", "--kind", "nope", "--vocab-size", "10"], "unknown tokenizer 'nope'"),
    (["train", "--kind", "wordpiece", "--style", "byte-level", "--vocab-size", "10"], "no option style"),
    (["train", "--style", "sideways", "--vocab-size", "10"], "--style"),
    (["train", "--vocab-size", "0"], "--vocab-size"),
])
def test_user_errors_are_user_errors(corpus_path, tmp_path, args, message):
    result = run(*args, corpus_path, "-o", tmp_path / "t.json", ok=False)
    assert isinstance(result.exception, UserError)
    assert message in str(result.exception)


def test_encode_needs_exactly_one_input(tmp_path, corpus_path):
    out = tmp_path / "tokenizer.json"
    run("train", "--vocab-size", 300, corpus_path, "-o", out)
    result = run("encode", out, ok=False)
    assert isinstance(result.exception, UserError)


def test_unreadable_tokenizer_is_a_user_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{")
    result = run("encode", bad, "--text", "x", ok=False)
    assert isinstance(result.exception, UserError) and "tokenizer.json" in str(result.exception)


def test_tokenize_commands_use_the_registry_named_by_registry(tmp_path, corpus_path):
    from modkit.cli import main

    (tmp_path / "mine.py").write_text(
        "import modkit\nfrom modkit_plugins.tokenizers.bpe import BPEOptions\n"
        "@modkit.hookimpl\ndef modkit_register_tokenizers(register):\n"
        "    register('my-bpe', 'modkit_plugins.tokenizers.bpe_model:BPETokenizer', options=BPEOptions)\n")
    (tmp_path / "registry.toml").write_text('plugins = ["mine.py"]\n')
    out = tmp_path / "tokenizer.json"
    r = CliRunner().invoke(main, ["--registry", str(tmp_path / "registry.toml"), "tokenize", "train",
                                  "--kind", "my-bpe", "--vocab-size", "300", str(corpus_path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert modkit.load_tokenizer(out).vocab_size == 300
