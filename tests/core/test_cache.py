"""modkit cache: what $MODKIT_CACHE holds, and clearing it, on real token files."""
from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from modkit.cli import main
from modkit.tokenfile import token_file
from modkit_plugins.tokenizers.bpe import BPEOptions


@pytest.fixture
def cache(tmp_path, monkeypatch, corpus_path):
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    monkeypatch.setenv("MODKIT_CACHE", str(tmp_path / "cache"))
    tokenizer = BPETokenizer.train([corpus_path], BPEOptions(vocab_size=300))
    made = token_file(tokenizer, corpus_path)
    (tmp_path / "cache" / "matmul-peak.json").write_text("{}")
    return tmp_path / "cache", tokenizer, made.path


def _cli(*args):
    result = CliRunner().invoke(main, ["cache", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_it_lists_each_part_with_its_files_and_size(cache):
    root, _, made = cache
    parts = json.loads(_cli("--json"))["parts"]
    files = [p for p in made.parent.iterdir()]  # the ids and what a token file keeps beside them
    assert made in files
    assert parts["tokens"] == {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
                               "holds": parts["tokens"]["holds"]}
    assert parts["data"]["files"] == 0 and parts["matmul-peak.json"]["files"] == 1
    assert str(root) in _cli() and "1 file " in _cli()


def test_clearing_a_part_removes_only_it_and_a_build_makes_the_file_again(cache, corpus_path):
    root, tokenizer, made = cache
    n = len(list(made.parent.iterdir()))
    assert f"would remove {n} files" in _cli("clear", "tokens", "--dry-run") and made.exists()
    assert f"removed {n} files" in _cli("clear", "tokens")
    assert not made.exists() and list(made.parent.iterdir()) == [] and (root / "matmul-peak.json").exists()
    again = token_file(tokenizer, corpus_path)
    assert again.path == made and len(again.ids) > 0


def test_older_than_keeps_what_is_recent_and_a_file_being_written_is_left_alone(cache):
    root, _, made = cache
    writing = made.parent / f".{made.name}.123.tmp"
    writing.write_bytes(b"half")
    assert "removed 0 files" in _cli("clear", "--older-than", "1")
    old = time.time() - 3 * 86400
    os.utime(made, (old, old))
    assert "removed 1 file," in _cli("clear", "--older-than", "2")
    assert not made.exists() and writing.exists()
    _cli("clear")
    assert writing.exists() and not (root / "matmul-peak.json").exists()


def test_an_unknown_part_is_refused_naming_the_parts(cache):
    result = CliRunner().invoke(main, ["cache", "clear", "tokenz"])
    assert result.exit_code == 2 and "'tokens', 'data', 'matmul-peak.json'" in result.output
