"""Token files: a corpus tokenized once into a memory map, by worker processes, then reused."""
from __future__ import annotations

import numpy as np
import pytest

import modkit.tokenfile as tokenfile
from modkit.tokenfile import token_file
from modkit_plugins.tokenizers.bpe import BPEOptions


@pytest.fixture(scope="module")
def tokenizer(corpus_path):
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    return BPETokenizer.train([corpus_path], BPEOptions(vocab_size=400))


def test_ids_equal_encoding_each_newline_cut_chunk_with_any_number_of_workers(tokenizer, corpus_path, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(tokenfile, "CHUNK_BYTES", 2000)
    text = corpus_path.read_text(encoding="utf-8")
    expected = [i for chunk in tokenfile.text_chunks(corpus_path) for i in tokenizer.encode(chunk)]
    assert "".join(tokenfile.text_chunks(corpus_path)) == text
    one = token_file(tokenizer, corpus_path, folder=tmp_path / "one", workers=1)
    two = token_file(tokenizer, corpus_path, folder=tmp_path / "two", workers=2)
    assert one.ids.dtype == np.uint16 and isinstance(one.ids, np.memmap)
    assert one.ids.tolist() == expected == two.ids.tolist()
    assert one.path.name.endswith(".u16") and one.path.name == two.path.name


def test_a_rebuild_reuses_the_file_and_another_corpus_gets_its_own(tokenizer, corpus_path, tmp_path):
    calls = []
    first = token_file(tokenizer, corpus_path, folder=tmp_path, workers=1, progress=lambda d, t: calls.append(d))
    assert calls and calls[-1] == corpus_path.stat().st_size
    again = token_file(tokenizer, corpus_path, folder=tmp_path, workers=1, progress=lambda d, t: calls.append("x"))
    assert again.path == first.path and "x" not in calls
    other = tmp_path / "other.txt"
    other.write_text("a different corpus\n", encoding="utf-8")
    assert token_file(tokenizer, other, folder=tmp_path, workers=1).path != first.path


def test_windows_read_from_the_map(tokenizer, corpus_path, tmp_path):
    tf = token_file(tokenizer, corpus_path, folder=tmp_path, workers=1)
    w = tokenfile.windows(tf.ids, [0, 5], 4)
    assert w.dtype == np.int64 and w.tolist() == [tf.ids[0:4].tolist(), tf.ids[5:9].tolist()]


def test_a_missing_or_non_utf8_corpus_is_a_user_error(tokenizer, tmp_path):
    from modkit.errors import UserError

    with pytest.raises(UserError, match="no such data file"):
        token_file(tokenizer, tmp_path / "nope.txt", folder=tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(UserError, match="not UTF-8"):
        token_file(tokenizer, bad, folder=tmp_path, workers=1)
    assert not list(tmp_path.glob("tokens-*"))  # nothing half-written
