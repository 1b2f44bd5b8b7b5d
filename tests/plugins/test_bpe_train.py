"""Training BPE: the textbook example, the incremental counts, save/load, and HF loading."""
from __future__ import annotations

from collections import Counter

import pytest
from conftest import HARD_CASES

import modkit
from modkit_plugins.tokenizers.bpe import BPEOptions
from modkit_plugins.tokenizers.bpe_model import BPETokenizer
from modkit_plugins.tokenizers.bpe_train import learn_merges


def test_textbook_example_reproduces_the_lecture_merges(tmp_path):
    # aaabdaaabac: aa -> Z, then ab -> Y (tied with Z+a; 'a' < 'aa' breaks it), then ZY -> X
    corpus = tmp_path / "toy.txt"
    corpus.write_text("aaabdaaabac\n")
    tok = BPETokenizer.train([corpus], BPEOptions(vocab_size=100, min_frequency=2))
    assert tok.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert [tok.id_to_token(i) for i in tok.encode("aaabdaaabac")] == ["aaab", "d", "aaab", "a", "c</w>"]


def naive_merges(words: dict[tuple[str, ...], int], n: int, min_frequency: int):
    """Reference trainer: recount every pair before every merge, same tie-breaking."""
    words = dict(words)
    merges = []
    for _ in range(n):
        pairs: Counter = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        pair, count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < min_frequency:
            break
        merges.append(pair)
        rewritten = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            rewritten[tuple(out)] = rewritten.get(tuple(out), 0) + c
        words = rewritten
    return merges


def test_incremental_counts_match_a_full_recount(paragraphs):
    shell = BPETokenizer({}, [])
    counts = Counter(w for p in paragraphs[:150] for w in shell._words(p))
    words = {}
    for w, c in counts.items():
        s = shell._symbols(w)
        words[s] = words.get(s, 0) + c
    _, merges = learn_merges(words, [], max_tokens=10**9, min_frequency=2)
    expected = naive_merges(words, len(merges) + 1, 2)
    assert merges == expected[: len(merges)]
    assert len(expected) == len(merges)  # both stop at the same min_frequency


@pytest.fixture(scope="module")
def trained(corpus_path):
    return BPETokenizer.train([corpus_path], BPEOptions(vocab_size=2000))


def test_training_reaches_the_vocab_size_and_has_eos_and_pad(trained):
    assert trained.vocab_size == 2000
    assert trained.special_id("eos") is not None and trained.special_id("pad") is not None
    assert trained.special_id("eos") != trained.special_id("pad")


def test_training_is_deterministic(corpus_path, trained):
    again = BPETokenizer.train([corpus_path], BPEOptions(vocab_size=2000))
    assert again.merges == trained.merges and again.vocab == trained.vocab


def test_min_frequency_stops_training(corpus_path):
    tok = BPETokenizer.train([corpus_path], BPEOptions(vocab_size=10**6, min_frequency=50))
    assert 0 < len(tok.merges) < 2000


def test_progress_is_reported(corpus_path):
    calls = []
    BPETokenizer.train([corpus_path], BPEOptions(vocab_size=300), progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == len(calls)


def test_saved_and_reloaded_gives_the_same_ids(tmp_path, trained, paragraphs):
    path = tmp_path / "tokenizer.json"
    trained.save(path)
    again = modkit.load_tokenizer(path)
    assert isinstance(again, BPETokenizer)
    assert again.special_tokens == trained.special_tokens
    for text in paragraphs[:200]:
        assert again.encode(text) == trained.encode(text)


@pytest.mark.parametrize("lowercase", [False, True])
def test_hugging_face_loads_what_modkit_writes(tmp_path, corpus_path, paragraphs, lowercase):
    tokenizers = pytest.importorskip("tokenizers")
    trained = BPETokenizer.train([corpus_path], BPEOptions(vocab_size=1000, lowercase=lowercase))
    path = tmp_path / "tokenizer.json"
    trained.save(path)
    reference = tokenizers.Tokenizer.from_file(str(path))
    texts = paragraphs[:500] + HARD_CASES
    mismatches = [
        t for t in texts
        if trained.encode_with_offsets(t, allow_special=True)
        != (reference.encode(t).ids, reference.encode(t).offsets)
    ]
    assert not mismatches, f"{len(mismatches)}/{len(texts)} differ, first: {mismatches[0]!r}"


def test_decode_joins_words_with_spaces(trained):
    assert trained.decode(trained.encode("the module  returns a value")) == "the module returns a value"


def test_unseen_characters_become_unk(trained):
    ids = trained.encode("\u4f60")
    assert ids == [trained.special_id("unk")]


def test_unseen_characters_without_unk_are_an_error_not_dropped(corpus_path):
    tok = BPETokenizer.train([corpus_path], BPEOptions(vocab_size=300, special_tokens={"eos": "<|endoftext|>"}))
    assert tok.decode(tok.encode("hello world")) == "hello world"
    for encode in (tok.encode, tok.encode_with_offsets):
        with pytest.raises(modkit.UserError, match="'ü' \\(in 'Zürich'\\) is not in the vocabulary"):
            encode("hello Zürich world")  # used to decode as "hello Zrich world"


def test_both_tokenizers_are_registered_with_documented_options():
    registry = modkit.get_registry()
    for name in ("bpe", "wordpiece"):
        component = registry.get("tokenizer", name)
        assert component.doc
        assert all(f.description for f in component.options.model_fields.values())


def test_unknown_special_roles_are_rejected():
    with pytest.raises(ValueError, match="roles"):
        BPEOptions(special_tokens={"start": "<s>"})


def test_word_end_vocab_json_and_merges(tmp_path, trained, paragraphs):
    import json

    (tmp_path / "vocab.json").write_text(json.dumps(trained.vocab))
    (tmp_path / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in trained.merges))
    again = modkit.load_tokenizer(tmp_path)
    assert again.style == "word-end" and again.pre_tokenizer == "whitespace"
    assert [again.encode(t) for t in paragraphs[:50]] == [trained.encode(t) for t in paragraphs[:50]]
