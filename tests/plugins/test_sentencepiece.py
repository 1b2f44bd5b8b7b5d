"""The sentencepiece tokenizer: ids and decoded text equal to the ``sentencepiece`` library's
on models trained here under eight option sets, read without importing sentencepiece."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest
from conftest import import_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from spm_models import HELD_BACK, OPTION_SETS, held_back_paragraphs, train_models

import modkit
from modkit_plugins.tokenizers.spm_model import SentencePieceTokenizer
from modkit_plugins.tokenizers.spm_proto import parse_model, read_model, serialize_model


@pytest.fixture(scope="session")
def spm_models(tmp_path_factory):
    import_or_skip("sentencepiece", "pip install sentencepiece (the dev extra)")
    return train_models(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="session", params=sorted(OPTION_SETS))
def pair(request, spm_models):
    """(modkit's tokenizer, sentencepiece's processor) on one trained model."""
    import sentencepiece

    path = spm_models[request.param]
    return modkit.load_tokenizer(path), sentencepiece.SentencePieceProcessor(model_file=str(path))


def _random_texts(n: int, seed: int = 0) -> list[str]:
    """Short strings over an alphabet of what normalisation treats specially."""
    alphabet = [chr(c) for c in [*range(0x20, 0x7F), 0x0, 0x1, 0x9, 0xA, 0xD, 0x85, 0xA0, 0xA8, 0xBD, 0x301,
                                 0x308, 0x410, 0x430, 0x627, 0x644, 0x2002, 0x2003, 0x200D, 0x2160, 0x2460,
                                 0x2581, 0x3000, 0x4E2D, 0x6587, 0xFB01, 0xFEFF, 0xFF21, 0xFF41, 0x1F3FD,
                                 0x1F600, 0x1F1EB, 0x1F1F7]]
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(n)]


@pytest.mark.parity
def test_ids_and_decoding_match_sentencepiece(pair):
    ours, reference = pair
    texts = HELD_BACK + held_back_paragraphs() + _random_texts(1500)
    mismatched = [t for t in texts if ours.encode(t) != reference.encode(t)]
    assert not mismatched, f"{len(mismatched)}/{len(texts)} differ; first: {mismatched[0]!r}"
    undecoded = [t for t in texts if ours.decode(reference.encode(t)) != reference.decode(reference.encode(t))]
    assert not undecoded, f"{len(undecoded)}/{len(texts)} decode differently; first: {undecoded[0]!r}"


@pytest.mark.parity
def test_normalization_matches_sentencepiece(pair):
    ours, reference = pair
    for text in HELD_BACK + _random_texts(500, seed=1):
        assert ours.normalize(text) == reference.normalize(text), text


@pytest.mark.parity
def test_any_ids_decode_as_sentencepiece_decodes(pair):
    """Arbitrary id sequences: stray byte pieces (invalid UTF-8), unknowns, leading spaces.
    sentencepiece writes control tokens as nothing; modkit does when they are skipped."""
    ours, reference = pair
    rng = random.Random(2)
    for _ in range(1500):
        ids = [rng.randrange(reference.get_piece_size()) for _ in range(rng.randint(0, 12))]
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids), ids


@pytest.mark.parity
def test_hypothesis_text_matches_sentencepiece(spm_models):
    import sentencepiece

    pairs = [(modkit.load_tokenizer(spm_models[name]),
              sentencepiece.SentencePieceProcessor(model_file=str(spm_models[name])))
             for name in ("unigram-nmt_nfkc", "bpe-identity-byte_fallback-keep_spaces")]

    @settings(max_examples=300, deadline=None)
    @given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
    def check(text):
        for ours, reference in pairs:
            assert ours.encode(text) == reference.encode(text)
            assert ours.decode(ours.encode(text)) == reference.decode(reference.encode(text))

    check()


def test_round_trip_gives_the_normalized_text(spm_models):
    """decode(encode(x)) == normalize(x) with the dummy-prefix space and the ▁ written back as
    spaces, for a model whose vocabulary covers everything (byte fallback)."""
    tok = modkit.load_tokenizer(spm_models["unigram-nfkc-byte_fallback"])

    @settings(max_examples=300, deadline=None)
    @given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
    def check(text):
        expected = tok.normalize(text).replace("\u2581", " ").removeprefix(" ")
        assert tok.decode(tok.encode(text)) == expected

    check()


def test_reading_a_model_does_not_import_sentencepiece(spm_models):
    path = spm_models["unigram-user_defined"]
    code = (f"import sys, modkit; tok = modkit.load_tokenizer({str(path)!r}); tok.encode('hello world'); "
            "bad = {'sentencepiece', 'google.protobuf', 'torch'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_file_round_trips_through_the_writer(spm_models, tmp_path):
    import sentencepiece

    path = spm_models["unigram-user_defined"]
    tok = SentencePieceTokenizer(read_model(path))
    tok.save_model(tmp_path / "copy.model")
    assert parse_model((tmp_path / "copy.model").read_bytes()) == read_model(path)
    reference = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "copy.model"))
    for text in HELD_BACK:
        assert reference.encode(text) == tok.encode(text)
    assert serialize_model(read_model(tmp_path / "copy.model")) == (tmp_path / "copy.model").read_bytes()


def test_roles_control_and_user_defined_symbols(spm_models):
    tok = modkit.load_tokenizer(spm_models["unigram-user_defined"])
    assert tok.special_tokens == {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}
    sep = tok.token_to_id("<sep>")
    assert sep in tok.encode("a<sep>b")  # user-defined: found in any text, as sentencepiece does
    cls_id = tok.token_to_id("<cls>")
    assert cls_id not in tok.encode("<cls> x")  # control: plain text unless allowed
    assert tok.encode("<cls> x", allow_special=True)[0] == cls_id
    assert tok.decode([cls_id] + tok.encode("x")) == "<cls> x"  # the text before keeps the space
    assert tok.decode([cls_id] + tok.encode("x"), skip_special_tokens=True) == "x"


@pytest.mark.parity
def test_offsets_match_sentencepiece(pair):
    """Character spans equal to sentencepiece's byte spans, converted; the bytes of a
    byte-fallback character all span the character (sentencepiece gives the span to the
    last and empty spans at its start to the others)."""
    ours, reference = pair
    for text in HELD_BACK + held_back_paragraphs()[:200]:
        ids, offsets = ours.encode_with_offsets(text)
        assert ids == ours.encode(text)
        char_at = {}
        position = 0
        for k, char in enumerate(text):
            char_at[position] = k
            position += len(char.encode("utf-8"))
        char_at[position] = len(text)
        expected = [(char_at[p.begin], char_at[p.end])
                    for p in reference.encode(text, return_type="proto").pieces]
        for n, (span, want) in enumerate(zip(offsets, expected)):
            if want[0] == want[1] and span[0] < span[1]:  # a byte piece before a character's last
                want = next(w for w in expected[n:] if w[0] < w[1])
            assert span == want, (text, n)


def test_corrupt_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.model"
    bad.write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(modkit.ArtifactError, match="broken.model: not a SentencePiece model"):
        modkit.load_tokenizer(bad)
