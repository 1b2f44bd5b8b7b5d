"""The compiled Unigram pass (plugins/modkit_plugins/tokenizers/_unigram_native.c) against
the Python pass it replaces, on random vocabularies, and both against ``sentencepiece`` where
their arithmetic differs most: texts long enough for sentencepiece to take its path scores
back to 0, and user-defined symbols that overlap."""
from __future__ import annotations

import pickle
import random
from array import array

import pytest
from conftest import fixture_text
from spm_models import HELD_BACK

import modkit
from modkit_plugins.tokenizers import spm_unigram
from modkit_plugins.tokenizers.spm_model import SentencePieceTokenizer
from modkit_plugins.tokenizers.spm_segment import build_trie, word_splitter
from modkit_plugins.tokenizers.spm_unigram import RESET_AT, Unigram


@pytest.fixture(scope="module", autouse=True)
def compiled_pass():
    """Built wherever a C compiler was there at install (hatch_build.py); in CI a skip fails."""
    if spm_unigram.native is None:
        pytest.skip("the compiled Unigram pass is not built: reinstall modkit (pip install -e .) with a C compiler")


def _f32(value: float) -> float:
    return array("f", [value])[0]


def _random_model(rng: random.Random, *, large: bool) -> tuple[list[str], list[float]]:
    """Pieces over a small alphabet (so segmentations compete and tie), the word boundary
    only at a piece's start; scores float32, some repeated (exact ties), and where ``large``
    big enough for a few dozen pieces to pass RESET_AT."""
    alphabet = "abcé▁"
    pieces = {"<unk>"}
    while len(pieces) < rng.randint(6, 40):
        body = "".join(rng.choice("abcé") for _ in range(rng.randint(1, 5)))
        pieces.add(("▁" if rng.random() < 0.3 else "") + body)
    pieces.update(rng.sample(alphabet[:4], rng.randint(2, 4)))  # most single characters: few unknowns
    pieces = sorted(pieces)
    low = -9000.0 if large else -12.0
    pool = [_f32(rng.uniform(low, -0.01)) for _ in range(max(2, len(pieces) // 3))]
    return pieces, [0.0 if p == "<unk>" else rng.choice(pool) for p in pieces]


def _pair(pieces, scores, *, float32: bool, byte_ids=None) -> tuple[Unigram, Unigram]:
    """(compiled, Python) over the same trie; the Python one with its word cache where the
    pieces allow it."""
    trie = build_trie((p, i) for i, p in enumerate(pieces) if p != "<unk>")
    unk_score = min(s for p, s in zip(pieces, scores) if p != "<unk>") - 10.0
    make = lambda: Unigram(trie, scores, pieces.index("<unk>"), unk_score, float32_paths=float32,  # noqa: E731
                           split=word_splitter([p for p in pieces if p != "<unk>"], "▁"), byte_ids=byte_ids)
    compiled, python = make(), make()
    python.use_native = False
    assert compiled.use_native and not python.use_native
    return compiled, python


@pytest.mark.parametrize("float32", [True, False], ids=["float32-sentencepiece", "doubles-hugging-face"])
def test_compiled_pass_equals_the_python_pass_on_random_models(float32):
    rng = random.Random(7 if float32 else 8)
    texts_checked = resets = 0
    for trial in range(120):
        large = trial % 3 == 0
        pieces, scores = _random_model(rng, large=large)
        compiled, python = _pair(pieces, scores, float32=float32)
        uncached = _pair(pieces, scores, float32=float32)[1]
        uncached.use_cache = False
        for _ in range(12):
            text = "".join(rng.choice("abcé▁▁x") for _ in range(rng.randint(0, 400 if large else 60)))
            want = uncached.segment(text)
            assert compiled.segment(text) == want, (pieces, scores, text)
            assert python.segment(text) == want, (pieces, scores, text)
            if all(i != compiled.unk_id for _, _, i in want):
                assert compiled.ids(text) == python.ids(text) == [i for _, _, i in want]
            resets += float32 and large and sum(scores[i] if i != compiled.unk_id else compiled.unk_score
                                                for _, _, i in want) < -RESET_AT
            texts_checked += 1
    assert texts_checked == 1440
    assert not float32 or resets > 50  # the scores did pass RESET_AT, so the reset was exercised


def test_unknown_characters_fuse_or_become_bytes():
    pieces = ["<unk>", "▁", "a", "b", "ab", *(f"<0x{b:02X}>" for b in range(256))]
    scores = [0.0, -1.0, -2.0, -2.0, -3.0] + [0.0] * 256
    byte_ids = [pieces.index(f"<0x{b:02X}>") for b in range(256)]
    fused, _ = _pair(pieces[:5], scores[:5], float32=True)
    as_bytes, _ = _pair(pieces, scores, float32=True, byte_ids=byte_ids)
    assert fused.ids("ab€€a¢b") == [4, 0, 2, 0, 3]  # a run of unknowns is one unk id
    euro, cent = ([byte_ids[b] for b in c.encode("utf-8")] for c in "€¢")
    assert as_bytes.ids("ab€€a¢b") == [4, *euro, *euro, 2, *cent, 3]
    assert as_bytes.ids("a\ud800") is None  # a lone surrogate has no bytes: the caller's error to give


def test_pickled_tokenizer_keeps_the_compiled_pass(tmp_path):
    pieces, scores = _random_model(random.Random(3), large=False)
    compiled, _ = _pair(pieces, scores, float32=True)
    copy = pickle.loads(pickle.dumps(compiled))
    assert copy.use_native
    assert copy.segment("abcé▁ab") == compiled.segment("abcé▁ab")
    python = pickle.loads(pickle.dumps(_pair(pieces, scores, float32=True)[1]))
    assert not python.use_native


def test_compiled_normaliser_equals_the_python_one(spm_models, google_spm_models):
    """Every model's normaliser (nmt_nfkc, nfkc, nmt_nfkc_cf, identity; spaces kept or not,
    with and without the dummy prefix) on random text over what normalisation changes:
    spaces of every kind, combining marks (where a longer key may start, the walk runs),
    full-width forms, ▁ itself; the compiled fast path where it applies, and the Python one."""
    from conftest import HARD_CASES

    rng = random.Random(9)
    alphabet = [chr(c) for c in [0x20, 0x20, 0x20, 0x41, 0x61, 0x7A, 0x0, 0x9, 0xA, 0xD, 0xA0, 0xAD, 0x301, 0x308,
                                 0x3099, 0x304B, 0x30AB, 0x2002, 0x200B, 0x2581, 0x3000, 0x4E2D, 0xFB01, 0xFF21,
                                 0xFF76, 0xFF9E, 0x1F600, 0x2160, 0x2460, 0xFEFF, 0xD55C, 0x1100, 0x1161]]
    texts = HARD_CASES + HELD_BACK + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
                                      for _ in range(3000)]
    paths = [*spm_models.values(), google_spm_models["kyoto_ja_unigram_8000.model"]]
    compiled_models = 0
    for path in paths:
        tok = modkit.load_tokenizer(path)
        python = SentencePieceTokenizer(tok.model)
        python.normalizer.use_compiled = False
        compiled_models += tok.normalizer.use_compiled
        for text in texts:
            assert tok.normalize(text) == python.normalize(text), (path.name, text)
        assert pickle.loads(pickle.dumps(tok.normalizer)).use_compiled == tok.normalizer.use_compiled
    assert compiled_models >= 8  # all but the models with user-defined symbols


@pytest.mark.parity
def test_texts_past_the_score_reset_match_sentencepiece(spm_models):
    """One line of 200,000 characters: sentencepiece's float32 path score passes 1e5 several
    times (it takes every score ahead of it back to 0 each time); both passes replay that."""
    import sentencepiece

    text = (fixture_text() * 2)[:200_000].replace("\n", " ") + " " + " ".join(HELD_BACK)
    for name in ("unigram-nmt_nfkc", "unigram-nfkc-byte_fallback", "unigram-whitespace_pieces-keep_spaces",
                 "unigram-no_split_by_whitespace"):
        reference = sentencepiece.SentencePieceProcessor(model_file=str(spm_models[name]))
        want = reference.encode(text)
        assert sum(reference.get_score(i) for i in want) < -3 * RESET_AT, name
        ours = modkit.load_tokenizer(spm_models[name])
        assert ours.compiled
        assert ours.encode(text) == want, name
        python = SentencePieceTokenizer(ours.model)
        python.compiled = False
        assert python.encode(text) == want, name
        assert ours.encode_with_offsets(text)[0] == want, name


@pytest.mark.parity
def test_overlapping_user_defined_symbols_match_sentencepiece(tmp_path):
    """sentencepiece 0.2.3 scores a user-defined symbol 0.1 x (its UTF-8 bytes - 1): where two
    overlap, the segmentation with the longer ones wins."""
    import sentencepiece
    from spm_models import training_corpus

    prefix = tmp_path / "overlap"
    sentencepiece.SentencePieceTrainer.train(
        input=str(training_corpus(tmp_path)), model_prefix=str(prefix), vocab_size=400, minloglevel=2,
        num_threads=1, user_defined_symbols=["ab", "abc", "bcd", "cd", "<x>", "<x><y>", "é", "éé"])
    reference = sentencepiece.SentencePieceProcessor(model_file=str(prefix) + ".model")
    ours = modkit.load_tokenizer(str(prefix) + ".model")
    python = SentencePieceTokenizer(ours.model)
    python.compiled = False
    rng = random.Random(5)
    texts = ["abcd", "abcdabc", "<x><y><x>", "éééé abc", *("".join(rng.choice(["ab", "c", "d", "<x>", "<y>", "é", " ",
                                                                                 "the "]) for _ in range(12))
                                                        for _ in range(300))]
    for text in texts:
        want = reference.encode(text)
        assert ours.encode(text) == want, text
        assert python.encode(text) == want, text


def test_token_files_are_named_by_the_encoder_that_made_them(spm_models, tmp_path, monkeypatch):
    """The ids of this encoder differ from an older one's on long lines and overlapping
    user-defined symbols: a token file one cached is not read as the other's."""
    from modkit.tokenfile import token_file_path
    from modkit_plugins.tokenizers import spm_formats

    tok = modkit.load_tokenizer(spm_models["unigram-user_defined"])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("foo bar<sep>baz\n", encoding="utf-8")
    assert tok.to_json()["model"][spm_formats._KEY]["encodes_as"] == "sentencepiece 0.2.3"
    now = token_file_path(tok, corpus, tmp_path)
    monkeypatch.setattr(spm_formats, "ENCODES_AS", "sentencepiece 0.2.0")
    assert token_file_path(tok, corpus, tmp_path) != now
