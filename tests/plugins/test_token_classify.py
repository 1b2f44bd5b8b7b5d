"""`token-classify`: words to sub-tokens (as transformers' word_ids), BIO spans (as seqeval),
training, ONNX parity, and word-level tags served equal to torch."""
from __future__ import annotations

import json
import random
import re

import pytest
import torch

import modkit
from modkit.builder.assembly import load_torch_model
from modkit.errors import UserError
from modkit.runtime import Runtime
from modkit_plugins.objectives.tagging import entity_scores, first_subtokens, spans, token_labels

from conftest import import_or_skip

TAGS = ["O", "B-CODE", "I-CODE"]


def code_sentences(paragraphs, n: int = 48) -> list[dict]:
    """Real sentences of the docs, each ``literal`` (in double backquotes, possibly several
    words) an entity: B-CODE on its first word, I-CODE on the rest."""
    out = []
    for p in paragraphs:
        words = p.split()[:40]
        if "``" not in p or len(words) < 6:
            continue
        tags, inside = [], False
        for w in words:
            opens = w.startswith("``")
            tags.append("B-CODE" if opens else "I-CODE" if inside else "O")
            inside = (opens or inside) and not (w.endswith("``") or re.search(r"``\W*$", w[2:] if opens else w))
        out.append({"tokens": words, "tags": tags})
        if len(out) == n:
            break
    return out


def test_word_ids_are_transformers_for_a_bert_vocabulary(minilm_vocab_path):
    transformers = import_or_skip("transformers", "pip install -e '.[dev]'")
    ours = modkit.load_tokenizer(minilm_vocab_path)
    theirs = transformers.BertTokenizerFast(str(minilm_vocab_path))
    words = ["The", "socketserver", "module's", "ThreadingMixIn", "(see", "below)", "handles", "Ünïcode", "requests."]
    for length in (None, 9):
        encoding, word_ids = ours.encode_words(words, max_length=length)
        ref = theirs(words, is_split_into_words=True, truncation=length is not None, max_length=length)
        assert encoding.ids == ref["input_ids"] and word_ids == ref.word_ids()


def test_byte_level_words_get_their_own_tokens(paragraphs, tmp_path):
    from modkit_plugins.tokenizers.bpe import BPEOptions
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    (tmp_path / "c.txt").write_text("\n".join(paragraphs[:30]))
    tok = BPETokenizer.train([tmp_path / "c.txt"], BPEOptions(style="byte-level", vocab_size=300))
    words = paragraphs[5].split()[:30]
    encoding, word_ids = tok.encode_words(words)
    assert encoding.ids == tok.encode(" ".join(words))
    assert sorted(set(word_ids)) == list(range(len(words))) and word_ids == sorted(word_ids)
    for w, word in enumerate(words):  # each word's tokens spell it (after the space before it)
        pieces = [i for i, x in zip(encoding.ids, word_ids) if x == w]
        assert tok.decode(pieces).strip() == word


def test_first_subtoken_labels():
    assert first_subtokens([None, 0, 0, 1, 2, 2, None]) == [None, 0, None, 1, 2, None, None]
    assert token_labels([None, 0, 0, 1, None], [4, 7]) == [-100, 4, -100, 7, -100]


def test_entity_scores_are_seqevals():
    seqeval = import_or_skip("seqeval.metrics", "pip install -e '.[dev]'")
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(200):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 5))]
        pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
        ours = entity_scores(gold, pred)
        assert ours["entity_f1"] == pytest.approx(seqeval.f1_score(gold, pred, zero_division=0), abs=1e-12)
        assert ours["entity_precision"] == pytest.approx(seqeval.precision_score(gold, pred, zero_division=0))
        assert ours["entity_recall"] == pytest.approx(seqeval.recall_score(gold, pred, zero_division=0))
    assert spans(["B-X", "I-X", "O", "I-Y", "I-Y", "B-Y", "I-X"]) == {("X", 0, 2), ("Y", 3, 5), ("Y", 5, 6), ("X", 6, 7)}


def write_spec(folder, paragraphs, family="bert", steps=40):
    rows = code_sentences(paragraphs)
    (folder / "tags.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "corpus.txt").write_text("\n\n".join(paragraphs[:80]))
    tokenizer = 'use = "wordpiece"' if family == "bert" else 'use = "bpe"\nstyle = "byte-level"'
    (folder / "spec.toml").write_text(f"""
name = "tags"
seed = 2
[tokenizer]
{tokenizer}
vocab_size = 400
train_on = ["corpus.txt"]
[backbone]
use = "{family}"
d_model = 32
n_layers = 2
n_heads = 2
n_positions = 96
[[stages]]
objective = {{ use = "token-classify", tags = {json.dumps(TAGS)}, holdout = 0.25 }}
data = "tags.jsonl"
steps = {steps}
batch_size = 8
seq_len = 96
lr = 3e-3
""")
    return folder / "spec.toml", rows


@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_tags_train_export_and_serve_what_torch_computes(tmp_path, paragraphs, family):
    spec, rows = write_spec(tmp_path, paragraphs, family)
    modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stage = m["stages"][0]
    assert stage["loss_last_10"] < stage["loss_first_10"]
    assert m["parity"]["max_abs_diff"] < 1e-4 and m["task"]["task"] == "token-classify"
    assert {"heldout_accuracy", "majority_baseline", "entity_f1", "entity_precision", "entity_recall"} <= stage["eval"].keys()

    served = Runtime(tmp_path / "out").run(rows)
    model, tok = load_torch_model(tmp_path / "out").eval(), modkit.load_tokenizer(tmp_path / "out")
    for record, result in zip(rows, served):
        encoding, word_ids = tok.encode_words(record["tokens"], max_length=96)
        with torch.no_grad():
            best = model(torch.tensor([encoding.ids]), torch.ones(1, len(encoding.ids), dtype=torch.long)).logits[0].argmax(-1)
        expected = [None] * len(record["tokens"])
        for position, word in enumerate(first_subtokens(word_ids)):
            if word is not None:
                expected[word] = TAGS[int(best[position])]
        assert result["tokens"] == record["tokens"] and result["tags"] == expected
        assert {(e["type"], e["start"], e["end"]) for e in result["entities"]} == spans(expected)

    text = Runtime(tmp_path / "out").run(["the ``socket`` module provides access"])[0]
    assert text["tokens"] == ["the", "``socket``", "module", "provides", "access"] and len(text["tags"]) == 5


def test_run_prints_word_tag_pairs_and_scores_a_file(tmp_path, paragraphs):
    from click.testing import CliRunner

    from modkit.cli import main

    spec, rows = write_spec(tmp_path, paragraphs, steps=2)
    modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "out"), "--text", "use ``os.path`` here"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"use/\S+ ``os.path``/\S+ here/\S+\n", result.stdout)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "out"), "--file", str(tmp_path / "tags.jsonl")])
    assert result.exit_code == 0 and "entity_f1" in result.output


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("tags"), "tags.jsonl:3: missing field 'tags'"),
    (lambda r: r["tags"].pop(), "tags.jsonl:3: 'tags' must hold one tag per word"),
    (lambda r: r["tags"].__setitem__(0, "B-PER"), "tags.jsonl:3: tag 'B-PER' is not one of"),
    (lambda r: r.update(tokens="one two"), "tags.jsonl:3: 'tokens' must be a non-empty list of words"),
])
def test_bad_tag_data_names_file_and_line(tmp_path, paragraphs, change, message):
    spec, rows = write_spec(tmp_path, paragraphs, steps=1)
    change(rows[2])
    (tmp_path / "tags.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=re.escape(message)):
        modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)


def test_preview_labels_first_subtokens_only(tmp_path, paragraphs):
    spec, rows = write_spec(tmp_path, paragraphs)
    for record in modkit.preview(spec, n=5):
        tok_labels = record["labels"]
        assert len(tok_labels) == len(record["input_ids"])
        assert tok_labels[0] == -100 and tok_labels[-1] == -100  # [CLS], [SEP]
        assert any(t != -100 for t in tok_labels)
        assert record["labels_text"].split() == [TAGS[t] for t in tok_labels if t != -100]
