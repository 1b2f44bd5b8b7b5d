"""Parity of the bpe tokenizer with tiktoken (GPT-2 ranks), Hugging Face tokenizers (GPT-2
byte-level tokenizer.json) and open_clip's SimpleTokenizer (CLIP merges)."""
from __future__ import annotations

import json
import random

import pytest
from conftest import HARD_CASES
from hypothesis import given, settings
from hypothesis import strategies as st

import modkit
from modkit_plugins.tokenizers.bpe_model import BPETokenizer


def assert_same(texts, ours, reference, name):
    mismatches = [t for t in texts if ours(t) != reference(t)]
    assert not mismatches, (
        f"{len(mismatches)}/{len(texts)} texts differ from {name}; first: {mismatches[0]!r}"
    )


@pytest.fixture(scope="module")
def gpt2(gpt2_tiktoken_path):
    return modkit.load_tokenizer(gpt2_tiktoken_path)


@pytest.fixture(scope="module")
def tiktoken_gpt2(gpt2_tiktoken_path):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    from modkit_plugins.tokenizers.pretokenize import GPT2_PATTERN

    ranks = load_tiktoken_bpe(str(gpt2_tiktoken_path))
    return tiktoken.Encoding("gpt2-reference", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def test_tiktoken_parity_on_paragraphs_and_hard_cases(gpt2, tiktoken_gpt2, paragraphs):
    texts = paragraphs + HARD_CASES
    assert_same(texts, gpt2.encode, tiktoken_gpt2.encode_ordinary, "tiktoken")


def test_tiktoken_parity_on_the_whole_slice_in_one_call(gpt2, tiktoken_gpt2, corpus_path):
    text = corpus_path.read_text(encoding="utf-8")
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)


def test_special_strings_are_text_unless_allowed(gpt2, tiktoken_gpt2):
    text = "a<|endoftext|>b"
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.encode(text, allow_special=True) == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.special_id("eos") == 50256


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_byte_level_round_trips_any_text(gpt2, tiktoken_gpt2, text):
    ids = gpt2.encode(text)
    assert gpt2.decode(ids) == text
    assert ids == tiktoken_gpt2.encode_ordinary(text)


MOSTLY_ASCII = st.lists(st.one_of(
    st.sampled_from(["\n", " ", "\t", "\r\n", "'s", "  ", "x.", "\x1c", "\x85", "\u00a0", "\u00e9"]),
    st.characters(max_codepoint=0x7F), st.characters()), max_size=40).map("".join)


@given(MOSTLY_ASCII)
@settings(max_examples=400, deadline=None)
def test_ascii_fast_path_agrees_with_tiktoken(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)


@given(st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=20))
@settings(max_examples=100, deadline=None)
def test_lone_surrogates_are_replaced_as_tiktoken_does(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)


@pytest.fixture(scope="module")
def gpt2_hf_json(tmp_path_factory, gpt2):
    """A GPT-2 tokenizer.json written by Hugging Face itself, from GPT-2's vocab and merges."""
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("gpt2-hf")
    vocab = {t: i for t, i in gpt2.vocab.items() if t != "<|endoftext|>"}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in gpt2.merges), encoding="utf-8")
    model = tokenizers.models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    reference = tokenizers.Tokenizer(model)
    reference.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = tokenizers.decoders.ByteLevel()
    reference.add_special_tokens(["<|endoftext|>"])
    reference.save(str(folder / "tokenizer.json"))
    return folder, reference


def test_hugging_face_gpt2_json_and_vocab_merges_parity(gpt2_hf_json, paragraphs):
    folder, reference = gpt2_hf_json
    texts = paragraphs[:1000] + HARD_CASES
    for source in (folder / "tokenizer.json", folder):  # tokenizer.json, vocab.json + merges.txt
        ours = modkit.load_tokenizer(source)
        assert isinstance(ours, BPETokenizer) and ours.style == "byte-level"
        # Hugging Face always recognises added special tokens in the text
        assert_same(texts, lambda t: ours.encode(t, allow_special=True),
                    lambda t: reference.encode(t).ids, f"HF via {source.name}")
        assert ours.special_id("eos") == reference.token_to_id("<|endoftext|>")


def test_hugging_face_loads_modkit_gpt2_json(tmp_path, gpt2, paragraphs):
    tokenizers = pytest.importorskip("tokenizers")
    gpt2.save(tmp_path / "tokenizer.json")
    reference = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = paragraphs[:500] + HARD_CASES
    assert_same(texts, lambda t: gpt2.encode_with_offsets(t, allow_special=True),
                lambda t: (reference.encode(t).ids, reference.encode(t).offsets),
                "HF loading modkit's json (ids and offsets)")
    assert reference.decode(gpt2.encode(texts[0])) == texts[0]


@pytest.fixture(scope="module")
def clip(clip_merges_path):
    return modkit.load_tokenizer(clip_merges_path)


def test_open_clip_parity(clip, open_clip_reference, paragraphs):
    texts = paragraphs + [t for t in HARD_CASES if "<" not in t]
    assert_same(texts, clip.encode, open_clip_reference.encode, "open_clip SimpleTokenizer")
    assert clip.special_id("eos") == open_clip_reference.eot_token_id
    assert clip.special_id("bos") == open_clip_reference.sot_token_id


def test_clip_style_saved_and_reloaded(tmp_path, clip, paragraphs):
    clip.save(tmp_path / "tokenizer.json")
    again = modkit.load_tokenizer(tmp_path / "tokenizer.json")
    assert again.pre_tokenizer == "clip"
    for text in paragraphs[:200]:
        assert again.encode(text) == clip.encode(text)


def test_open_clip_special_tokens_found_by_its_regex(clip, open_clip_reference, paragraphs):
    # open_clip's specials are alternatives of its regex, after cleaning: "]<end_of_text>" is
    # one punctuation run there; "&lt;start_of_text&gt;" and upper case are specials
    texts = ["]<end_of_text>", "><start_of_text>a", "a<start_of_text>b <end_of_text>",
             "&lt;start_of_text&gt;x", "<END_OF_TEXT>", "<|endoftext|> [CLS]"]
    texts += [p[:40] + "<end_of_text>" + p[40:80] for p in paragraphs[:100]]
    assert_same(texts, lambda t: clip.encode(t, allow_special=True),
                open_clip_reference.encode, "open_clip with special tokens")


def test_word_end_decode_spaces_special_tokens_as_open_clip(clip, open_clip_reference, paragraphs):
    bos, eos = clip.special_id("bos"), clip.special_id("eos")
    for text in paragraphs[:100] + ["a photo of a cat", "x"]:
        ids = [bos, *open_clip_reference.encode(text), eos]
        # open_clip keeps the last word's space; modkit drops it, as Hugging Face's BPEDecoder
        assert clip.decode(ids) == open_clip_reference.decode(ids)
        words = open_clip_reference.encode(text) + [bos] + open_clip_reference.encode(text)
        assert clip.decode(words) == open_clip_reference.decode(words).removesuffix(" ")
        assert clip.decode(ids, skip_special_tokens=True) == \
            open_clip_reference.decode(ids[1:-1]).removesuffix(" ")


@pytest.fixture(scope="module")
def roberta_style_json(tmp_path_factory, gpt2):
    """A RoBERTa / BART style tokenizer.json (as facebook/bart-base's): <s> <pad> </s> <unk>
    first, <mask> last with lstrip, RobertaProcessing adding <s> A </s></s> B </s> and
    trimming spaces from offsets."""
    tokenizers = pytest.importorskip("tokenizers")
    doc = gpt2.to_json()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token, _ in sorted(doc["model"]["vocab"].items(), key=lambda kv: kv[1]):
        if token != "<|endoftext|>":
            vocab.setdefault(token, len(vocab))
    vocab["<mask>"] = len(vocab)
    doc["model"]["vocab"] = vocab
    doc["added_tokens"] = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": t == "<mask>",
                            "rstrip": False, "normalized": False, "special": True} for t in
                           ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    doc["post_processor"] = {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                             "trim_offsets": True, "add_prefix_space": False}
    path = tmp_path_factory.mktemp("roberta") / "tokenizer.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path, tokenizers.Tokenizer.from_file(str(path))


def test_roberta_style_json_matches_hugging_face(tmp_path, roberta_style_json, paragraphs):
    tokenizers = pytest.importorskip("tokenizers")
    path, reference = roberta_style_json
    texts = paragraphs[:150] + [t for t in HARD_CASES if t] + [
        "The capital is <mask>.", "x  <mask> y</s>", "<mask>", " a  b ", "\t<mask>\n", "a\u00a0 <mask>"]
    ours = modkit.load_tokenizer(path)
    ours.save(tmp_path / "tokenizer.json")  # and what modkit writes back reads the same in HF
    written = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for i, text in enumerate(texts):
        pair = texts[i - 1] if i % 3 == 0 else None
        ids = ours.encode_plus(text, pair, allow_special=True, return_offsets=True)
        for theirs in (reference.encode(text, pair), written.encode(text, pair)):
            assert (ids.ids, ids.type_ids, ids.offsets) == (theirs.ids, theirs.type_ids, theirs.offsets), (text, pair)


def test_added_tokens_of_a_hugging_face_json_are_found_as_there(tmp_path, gpt2, paragraphs):
    # plain added tokens are found in any text (first pass: "normalized": false ones, then the
    # rest in what is left), special ones without a known role too when allowed; lstrip /
    # rstrip / single_word as Hugging Face applies them, offsets and decode included
    tokenizers = pytest.importorskip("tokenizers")
    gpt2.save(tmp_path / "base.json")
    reference = tokenizers.Tokenizer.from_file(str(tmp_path / "base.json"))
    added = tokenizers.AddedToken
    reference.add_tokens([added("foo", normalized=False), added(" bar", normalized=False),
                          added("<tag>", lstrip=True, rstrip=True, normalized=False),
                          added("the", single_word=True, normalized=False), added("ing"),
                          added("\u00e9", single_word=True)])
    reference.add_special_tokens([added("<|sep|>", rstrip=True), added("[X]", single_word=True)])
    reference.save(str(tmp_path / "tokenizer.json"))
    ours = modkit.load_tokenizer(tmp_path / "tokenizer.json")
    pieces = ["foo", " bar", "<tag>", "the", "ing", "\u00e9", "<|sep|>", "[X]", " ", "  ", "_", "a", "\u2460"]
    rng = random.Random(0)
    texts = ["".join(rng.choice(pieces) if rng.random() < 0.5 else p[i:i + 3] for i in range(0, 30, 3))
             for p in paragraphs[:300]] + ["football", "x <tag> bar", "a\u00e9foo the\u2460", "u<|sep|>  v"]
    for text in texts:
        theirs = reference.encode(text)
        assert ours.encode_with_offsets(text, allow_special=True) == (theirs.ids, theirs.offsets), text
        for skip in (False, True):
            assert ours.decode(theirs.ids, skip_special_tokens=skip) == \
                reference.decode(theirs.ids, skip_special_tokens=skip), text
    assert ours.encode("u<|sep|>v") != ours.encode("u<|sep|>v", allow_special=True)  # special: only when allowed
    assert ours.encode("xfoo") == reference.encode("xfoo").ids  # plain: always


def test_plain_added_tokens_matched_after_normalizing_are_refused(tmp_path, minilm_tokenizer_json_path):
    # WordPiece lower-cases: HF looks for "normalized" added tokens in lower-cased text, modkit does not
    tokenizers = pytest.importorskip("tokenizers")
    reference = tokenizers.Tokenizer.from_file(str(minilm_tokenizer_json_path))
    reference.add_tokens(["Hello World"])
    reference.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(modkit.ArtifactError, match="'Hello World' is matched in normalized text"):
        modkit.load_tokenizer(tmp_path / "tokenizer.json")


def test_hugging_face_decodes_modkit_clip_json_as_modkit(tmp_path, clip, paragraphs):
    tokenizers = pytest.importorskip("tokenizers")
    clip.save(tmp_path / "tokenizer.json")
    reference = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    bos, eos = clip.special_id("bos"), clip.special_id("eos")
    for text in paragraphs[:100] + ["h\u00e9llo w\u00f6rld \u4f60\u597d", "x"]:
        ids = [bos, *clip.encode(text), eos]
        for skip in (False, True):
            assert reference.decode(ids, skip_special_tokens=skip) == clip.decode(ids, skip_special_tokens=skip)
