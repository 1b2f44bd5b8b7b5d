"""Segment files: documents of sentences tokenized once into memory maps, equal to the
documents of the whole text in memory however the corpus is cut into chunks; token files with
marks; arrays derived from a token file once."""
from __future__ import annotations

import numpy as np
import pytest

import modkit.segmentfile as segmentfile
import modkit.tokenfile as tokenfile
from modkit.segmentfile import segment_file
from modkit.tokenfile import token_file
from modkit_plugins.objectives.masking import word_starts
from modkit_plugins.objectives.pairs import documents, sentences
from modkit_plugins.tokenizers.bpe import BPEOptions


@pytest.fixture(scope="module")
def tokenizer(corpus_path):
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    return BPETokenizer.train([corpus_path], BPEOptions(vocab_size=400))


def read_back(sf) -> list[list[list[int]]]:
    return [[sf.segment(s).tolist() for s in range(sf.documents[d], sf.documents[d + 1])] for d in range(sf.n_documents)]


@pytest.mark.parametrize("form", ["paragraphs", "lines"])
def test_segments_equal_the_documents_of_the_whole_text_with_any_chunks_and_workers(form, tokenizer, corpus_path,
                                                                                   tmp_path, monkeypatch):
    text = corpus_path.read_text(encoding="utf-8")
    if form == "lines":  # no blank line: every line is a document
        text = "\n".join(line for line in text.splitlines() if line.strip()) + "\n"
    else:  # blank lines of spaces, several in a row, at the start and the end too
        text = "\n \n" + text.replace("\n\n", "\n  \n\t\n", 50) + "\n\n"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    expected = [[tokenizer.encode(s) for s in doc] for doc in documents(text)]
    assert len(expected) > 50 and segmentfile.has_paragraphs(text) == (form == "paragraphs")
    monkeypatch.setattr(tokenfile, "CHUNK_BYTES", 3000)  # segment files read through its chunks
    assert "".join(segmentfile._document_chunks(corpus, form == "lines")) == text
    one = segment_file(tokenizer, corpus, sentences, folder=tmp_path / "one", workers=1)
    two = segment_file(tokenizer, corpus, sentences, folder=tmp_path / "two", workers=2)
    assert read_back(one) == expected == read_back(two)
    assert isinstance(one.segments, np.memmap) and one.segments.dtype == np.int64
    assert one.tokens.path.name == two.tokens.path.name and one.tokens.path.name.startswith("segments-")


def test_a_segment_file_is_reused_and_a_file_without_documents_is_empty(tokenizer, corpus_path, tmp_path):
    calls = []
    first = segment_file(tokenizer, corpus_path, sentences, folder=tmp_path, workers=1, progress=lambda d, t: calls.append(d))
    again = segment_file(tokenizer, corpus_path, sentences, folder=tmp_path, workers=1, progress=lambda d, t: calls.append("x"))
    assert calls and "x" not in calls and again.tokens.path == first.tokens.path
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    empty = segment_file(tokenizer, blank, sentences, folder=tmp_path, workers=1)
    assert empty.n_documents == 0 and empty.n_segments == 0 and len(empty.tokens) == 0


def test_marks_are_written_in_the_same_pass_under_their_own_name(tokenizer, corpus_path, tmp_path, monkeypatch):
    monkeypatch.setattr(tokenfile, "CHUNK_BYTES", 5000)
    plain = token_file(tokenizer, corpus_path, folder=tmp_path, workers=1)
    marked = token_file(tokenizer, corpus_path, folder=tmp_path, workers=2, marks=word_starts)
    expected = [word_starts(tokenizer, chunk) for chunk in tokenfile.text_chunks(corpus_path)]
    assert marked.ids.tolist() == [i for ids, _ in expected for i in ids] == plain.ids.tolist()
    assert marked.marks.tolist() == [int(m) for _, marks in expected for m in marks]
    assert marked.path != plain.path and plain.marks is None
    assert 0 < marked.marks.mean() < 1
    tokenfile.companion(marked.path, "marks").unlink()  # as `modkit cache clear --older-than` may leave it
    again = token_file(tokenizer, corpus_path, folder=tmp_path, workers=1, marks=word_starts)
    assert again.marks.tolist() == marked.marks.tolist()


def test_a_derived_array_is_computed_once_and_kept_beside_the_file(tokenizer, corpus_path, tmp_path):
    tf = token_file(tokenizer, corpus_path, folder=tmp_path, workers=1)
    made = []

    def pieces():
        made.append(1)
        yield np.arange(3)
        yield np.arange(2)

    assert tf.derived("count-5", np.int64, pieces).tolist() == [0, 1, 2, 0, 1]
    assert tf.derived("count-5", np.int64, pieces).tolist() == [0, 1, 2, 0, 1] and made == [1]
    assert (tmp_path / f"{tf.path.name}.count-5").exists()


def test_a_non_utf8_corpus_leaves_no_segment_file_half_written(tokenizer, tmp_path):
    from modkit.errors import UserError

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"One. Two.\n\nok\n\xff\xfe\n")
    with pytest.raises(UserError, match="not UTF-8"):
        segment_file(tokenizer, bad, sentences, folder=tmp_path / "cache", workers=1)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("segments-")]
