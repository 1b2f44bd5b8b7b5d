"""WordPiece: parity with Hugging Face tokenizers on bert-base-uncased's vocabulary, offsets,
pair templates, training, and save/load both ways."""
from __future__ import annotations

import pytest
from conftest import HARD_CASES
from hypothesis import given, settings
from hypothesis import strategies as st

import modkit
from modkit_plugins.tokenizers.wordpiece import WordPieceOptions
from modkit_plugins.tokenizers.wordpiece_model import WordPieceTokenizer

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def reference(minilm_tokenizer_json_path):
    tok = tokenizers.Tokenizer.from_file(str(minilm_tokenizer_json_path))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="module", params=["vocab.txt", "tokenizer.json"])
def bert(request, minilm_vocab_path, minilm_tokenizer_json_path):
    path = minilm_vocab_path if request.param == "vocab.txt" else minilm_tokenizer_json_path
    tok = modkit.load_tokenizer(path)
    assert isinstance(tok, WordPieceTokenizer) and tok.lowercase
    return tok


def test_ids_match_hugging_face(bert, reference, paragraphs):
    texts = paragraphs + HARD_CASES
    # Hugging Face recognises its added special tokens in text, so compare with them allowed
    mismatches = [t for t in texts
                  if bert.encode(t, allow_special=True) != reference.encode(t, add_special_tokens=False).ids]
    assert not mismatches, f"{len(mismatches)}/{len(texts)} differ; first: {mismatches[0]!r}"


def test_pairs_offsets_and_segment_ids_match_hugging_face(bert, reference, paragraphs):
    texts = paragraphs[:300] + [t for t in HARD_CASES if t.strip()]
    for a, b in zip(texts, texts[1:]):
        ours = bert.encode_plus(a, b, return_offsets=True, allow_special=True)
        theirs = reference.encode(a, b)
        assert (ours.ids, ours.type_ids, ours.offsets) == (theirs.ids, theirs.type_ids,
                                                           theirs.offsets), (a, b)


def test_decode_matches_hugging_face(bert, reference, paragraphs):
    for text in paragraphs[:200]:
        ids = bert.encode(text)
        assert bert.decode(ids) == reference.decode(ids)


def test_special_strings_are_text_unless_allowed(bert):
    ids = bert.encode("[CLS] hello")
    assert bert.special_id("cls") not in ids
    assert bert.encode("[CLS] hello", allow_special=True)[0] == bert.special_id("cls")


def test_long_and_unknown_words_become_unk(bert):
    unk = bert.special_id("unk")
    assert bert.encode("a" * 101) == [unk]
    assert bert.encode("\U0001fbca") == [unk]


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_never_crashes_and_ids_are_in_the_vocabulary(bert, text):
    ids = bert.encode(text)
    assert all(bert.id_to_token(i) is not None for i in ids)
    ids, offsets = bert.encode_with_offsets(text)
    assert all(0 <= s < e <= len(text) for s, e in offsets)


@given(st.lists(st.one_of(st.characters(max_codepoint=0x7F), st.sampled_from(["\u00e9", "\u4e2d", "\u00a0"])),
                max_size=40).map("".join))
@settings(max_examples=300, deadline=None)
def test_mostly_ascii_text_matches_hugging_face(bert, reference, text):
    assert bert.encode(text, allow_special=True) == reference.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def trained(corpus_path):
    return WordPieceTokenizer.train([corpus_path], WordPieceOptions(vocab_size=1500))


def test_training_reaches_the_vocab_size_with_bert_specials(trained):
    assert trained.vocab_size == 1500
    assert [trained.special_id(r) for r in ("pad", "unk", "cls", "sep", "mask")] == [0, 1, 2, 3, 4]
    assert trained.token_to_id("##s") is not None


def test_trained_tokenizer_round_trips_through_hugging_face(tmp_path, trained, paragraphs):
    path = tmp_path / "tokenizer.json"
    trained.save(path)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    again = modkit.load_tokenizer(path)
    for a, b in zip(paragraphs[:200], paragraphs[1:201]):
        ours = trained.encode_plus(a, b)
        assert ours.ids == theirs.encode(a, b).ids == again.encode_plus(a, b).ids
        assert ours.type_ids == theirs.encode(a, b).type_ids


def test_modkit_reads_what_hugging_face_writes(tmp_path, reference, paragraphs):
    path = tmp_path / "tokenizer.json"
    reference.save(str(path))
    ours = modkit.load_tokenizer(path)
    for text in paragraphs[:200]:
        assert ours.encode_plus(text).ids == reference.encode(text).ids


def test_decode_spaces_special_tokens_as_hugging_face(bert, reference, paragraphs):
    # special tokens are words to HF's WordPiece decoder: spaced like the others, and the
    # space stays where one is skipped ("x [SEP] second" -> "x second", not "xsecond")
    texts = paragraphs[:50] + ["hello there, [MASK] how's it", "\U0001fbca x \U0001fbca."]
    for a, b in zip(texts, texts[1:]):
        ids = reference.encode(a, b, add_special_tokens=True).ids
        for skip in (False, True):
            assert bert.decode(ids, skip_special_tokens=skip) == \
                reference.decode(ids, skip_special_tokens=skip), (a, b, skip)


def test_cjk_extension_e_split_as_hugging_face(bert, reference):
    # Hugging Face's CJK ranges start Extension E at U+2B920 (BERT's original: U+2B820)
    text = "a\U0002b820b \U0002b91f\u4e00 \U0002b920c \U0002ceafd"
    assert bert.encode(text) == reference.encode(text, add_special_tokens=False).ids
    assert bert.encode_with_offsets(text)[1] == reference.encode(text, add_special_tokens=False).offsets
