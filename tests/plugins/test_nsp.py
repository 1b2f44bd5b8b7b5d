"""The `nsp` objective (BERT's next-sentence pairs) and several objectives in one stage."""
from __future__ import annotations

import json
import math

import pytest
import torch

import modkit
from modkit.builder.build import build
from modkit.errors import SpecError
from modkit.runtime import Runtime
from modkit.spec import load_spec
from specs import DOCS, killed_after_step, write_tiny_bert_spec as write_spec


def tiny_tokenizer(tmp_path):
    from modkit_plugins.tokenizers.wordpiece import WordPieceOptions
    from modkit_plugins.tokenizers.wordpiece_model import WordPieceTokenizer

    (tmp_path / "docs.txt").write_text(DOCS)
    return WordPieceTokenizer.train([tmp_path / "docs.txt"], WordPieceOptions(vocab_size=200, min_frequency=1))


def test_pairs_are_next_or_from_another_document(tmp_path):
    from modkit_plugins.objectives.nsp import NSPOptions
    from modkit_plugins.objectives.nsp_impl import NextSentence
    from modkit_plugins.backbones.bert import BERTOptions
    from modkit_plugins.backbones.bert_model import BERT

    tok = tiny_tokenizer(tmp_path)
    backbone = BERT(BERTOptions(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2))
    nsp = NextSentence(NSPOptions(holdout=0.0), backbone, tok)
    data = nsp.reader.load_data(tmp_path / "docs.txt", 32)
    batch = nsp.reader.batch(data, 2000, torch.Generator().manual_seed(0))
    labels = batch["next_sentence_label"]
    assert abs(labels.float().mean().item() - 0.5) < 0.04
    cls, sep = tok.special_id("cls"), tok.special_id("sep")
    for row in range(200):
        n = int(batch["attention_mask"][row].sum())
        ids, types = batch["input_ids"][row, :n].tolist(), batch["token_type_ids"][row, :n].tolist()
        first_sep = ids.index(sep)
        assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2
        assert types == [0] * (first_sep + 1) + [1] * (n - first_sep - 1)
        a, b = tok.decode(ids[1:first_sep]), tok.decode(ids[first_sep + 1: -1])
        doc_a, s_a = int(a.split()[0][3:]), int(a.split()[1][8:])
        doc_b, s_b = int(b.split()[0][3:]), int(b.split()[1][8:])
        if labels[row] == 0:  # IsNext, as transformers labels it
            assert (doc_b, s_b) == (doc_a, s_a + 1)
        else:
            assert doc_b != doc_a


def test_mlm_and_nsp_in_one_stage_record_each_loss(tmp_path):
    write_spec(tmp_path, '[{ use = "mlm" }, { use = "nsp", weight = 0.5 }]')
    manifest = build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    report = manifest["stages"][0]
    losses = report["losses"]
    assert set(losses) == {"mlm", "nsp"} and losses["nsp"]["weight"] == 0.5
    total = losses["mlm"]["loss_first_10"] + 0.5 * losses["nsp"]["loss_first_10"]
    assert abs(report["loss_first_10"] - total) < 1e-4
    # each objective's held-back loss, and what the loss does not say
    assert set(report["eval"]) == {"mlm.eval_loss", "mlm.eval_perplexity", "mlm.heldout_mlm_accuracy",
                                   "nsp.eval_loss", "nsp.heldout_nsp_accuracy"}
    assert manifest["task"]["task"] == "fill-mask"  # the first objective is the task
    assert [o["name"] for o in manifest["components"]["stages"][0]["objectives"]] == ["mlm", "nsp"]
    model = modkit.load_model(tmp_path / "out")  # both heads come back from the weights
    assert set(model.objectives) == {"mlm", "nsp"}
    assert Runtime(tmp_path / "out").run(["doc1 [MASK] word3."])[0]["masks"]


@pytest.mark.parametrize("objective, own", [
    ('{ use = "mlm" }', "heldout_mlm_accuracy"),
    ('{ use = "nsp" }', "heldout_nsp_accuracy"),
    ('[{ use = "mlm" }, { use = "nsp", weight = 0.5 }]', "mlm.heldout_mlm_accuracy"),
])
def test_mlm_and_nsp_report_a_held_back_eval_loss(tmp_path, objective, own):
    write_spec(tmp_path, objective, "eval_every = 3\neval_examples = 16")
    manifest = build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    figures = manifest["stages"][0]["eval"]
    key = "mlm.eval_loss" if own.startswith("mlm.") else "eval_loss"
    loss = figures[key]
    assert 0 < loss < 20
    if "nsp" in own:  # a binary cross-entropy: its exp is no perplexity
        assert key.replace("loss", "perplexity") not in figures
    else:
        assert math.isclose(figures[key.replace("loss", "perplexity")], math.exp(loss), rel_tol=1e-6)
    assert own in figures and all(k.endswith("eval_loss") for k in figures if k.endswith("loss"))  # one loss each
    evals = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval_loss" in r for r in evals) == 2  # at steps 3 and 6


def test_nsp_is_served_with_segment_ids(tmp_path):
    write_spec(tmp_path, '{ use = "nsp" }')
    manifest = build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    assert manifest["parity"]["inputs"]["token_type_ids"] and manifest["parity"]["max_abs_diff"] < 1e-4
    [result] = Runtime(tmp_path / "out").run([{"text": "Doc1 sentence0 word7.", "text_pair": "Doc1 sentence1 word8."}])
    assert result["label"] in ("IsNext", "NotNext") and abs(sum(result["probabilities"].values()) - 1) < 1e-5
    model = modkit.load_model(tmp_path / "out")  # the torch model gives the same probabilities
    tok = modkit.load_tokenizer(tmp_path / "out")
    e = tok.encode_plus("Doc1 sentence0 word7.", "Doc1 sentence1 word8.")
    ids, types = torch.tensor([e.ids]), torch.tensor([e.type_ids])
    with torch.no_grad():
        probs = model(ids, torch.ones_like(ids), token_type_ids=types).logits.softmax(-1)[0]
    assert abs(probs[0].item() - result["probabilities"]["IsNext"]) < 1e-5


def test_objective_weights_must_be_positive(tmp_path):
    write_spec(tmp_path, '[{ use = "mlm" }, { use = "nsp", weight = -1 }]')
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "spec.toml")
    assert err.value.problems[0][0] == "stages[0].objective[1].weight"
    spec = json.dumps(load_spec(tmp_path / "spec.toml", ["stages[0].objective[1].weight=2"]).resolved_dict())
    assert '"weight": 2' in spec



def test_a_resumed_mlm_and_nsp_stage_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    from modkit.fileio import sha256_file

    write_spec(tmp_path, '[{ use = "mlm" }, { use = "nsp", weight = 0.5 }]',
               "checkpoint_every = 2\n[export]\nonnx = false")
    whole = build(tmp_path / "spec.toml", tmp_path / "whole", progress=False, echo=lambda m: None)
    killed_after_step(5, monkeypatch,
                      lambda: build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None))
    resumed = build(tmp_path / "spec.toml", tmp_path / "out", resume=True, progress=False, echo=lambda m: None)
    assert sha256_file(tmp_path / "out" / "model.safetensors") == sha256_file(tmp_path / "whole" / "model.safetensors")
    # each objective's own losses too: the steps before the interruption come from the checkpoint
    for key in ("losses", "loss_first_10", "loss_last_10", "eval"):
        assert resumed["stages"][0][key] == whole["stages"][0][key], key


def test_sentences_end_at_a_sentence_end_not_at_restructuredtext_markup():
    from pathlib import Path

    from modkit_plugins.objectives.pairs import documents

    text = (".. note::\n   Read this first. Then that... and more!\n\n"
            "See e.g. the ``socket`` module. 2to3 reads code.\n\nOne line.\nTwo lines? \"Yes.\"")
    assert documents(text) == [[".. note:: Read this first.", "Then that... and more!"],
                               ["See e.g. the ``socket`` module.", "2to3 reads code."],
                               ["One line.", "Two lines?", "\"Yes.\""]]
    # tiny-bert's corpus (Python's reST docs): ".." and "..." were 2,134 of its "sentences"
    corpus = (Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt" / "corpus.txt").read_text(encoding="utf-8")
    sentences = [s for doc in documents(corpus) for s in doc]
    assert not [s for s in sentences if s.strip(".") == ""]
    assert sum(not any(c.isalnum() for c in s) for s in sentences) < 0.01 * len(sentences)  # "::" paragraphs
