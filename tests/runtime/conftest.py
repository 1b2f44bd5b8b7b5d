"""Tiny artifacts built once per test session for the runtime and serving tests (default
optimisation, int8 and fp16 graphs too)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import modkit
from specs import tiny_gpt_parts, write_corpus

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _build(folder: Path, spec: str) -> Path:
    (folder / "spec.toml").write_text(spec)
    modkit.build(folder / "spec.toml", folder / "out", progress=False, echo=lambda _: None)
    return folder / "out"


@pytest.fixture(scope="session")
def gpt_artifact(tmp_path_factory) -> Path:
    """A language model: GPT-2 style, 2 layers, byte-level BPE; a few steps of training."""
    folder = tmp_path_factory.mktemp("gpt")
    write_corpus(folder, 30_000)
    return _build(folder, f'''
name = "tiny-lm"
seed = 11
{tiny_gpt_parts()}
[[stages]]
objective = {{ use = "clm" }}
data = "corpus.txt"
steps = 30
batch_size = 8
seq_len = 32
lr = 3e-3
[export]
quantize = ["int8", "fp16"]
''')


@pytest.fixture(scope="session")
def seq2seq_artifact(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bart")
    rows = (EXAMPLES / "tiny-t5" / "data" / "train.jsonl").read_text().splitlines()[:120]
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "corpus.txt").write_text("\n".join(json.loads(r)["target"] for r in rows))
    return _build(folder, '''
name = "tiny-s2s"
seed = 5
[tokenizer]
use = "bpe"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
use = "bart"
d_model = 32
encoder_layers = 2
decoder_layers = 2
n_heads = 2
d_ff = 64
n_positions = 64
[[stages]]
objective = { use = "seq2seq", max_new_tokens = 10, eval_examples = 4 }
data = "train.jsonl"
steps = 30
batch_size = 8
seq_len = 24
lr = 3e-3
[export]
quantize = ["int8", "fp16"]
''')


@pytest.fixture(scope="session")
def classifier_artifact(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cls")
    rows = (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines()[:200]
    (folder / "data.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "corpus.txt").write_text("\n".join(json.loads(r)["text"] for r in rows))
    labels = sorted({json.loads(r)["label"] for r in rows})
    return _build(folder, f'''
name = "tiny-cls"
seed = 2
[tokenizer]
use = "wordpiece"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
use = "bert"
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
n_positions = 64
[[stages]]
objective = {{ use = "classify", labels = {json.dumps(labels)} }}
data = "data.jsonl"
steps = 20
batch_size = 8
seq_len = 48
lr = 3e-3
[export]
quantize = ["int8", "fp16"]
''')


@pytest.fixture(scope="session")
def embed_artifact(tmp_path_factory) -> Path:
    """Sentence embeddings: a 1-layer BERT trained a few steps on pairs of module descriptions."""
    folder = tmp_path_factory.mktemp("embed")
    texts = [json.loads(r)["text"] for r in (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines()[:120]]
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps({"text": t, "text_pair": " ".join(t.split()[::-1])})
                                                  for t in texts) + "\n")
    (folder / "corpus.txt").write_text("\n".join(texts))
    return _build(folder, '''
name = "tiny-embed"
seed = 3
[tokenizer]
use = "wordpiece"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
use = "bert"
d_model = 32
n_layers = 1
n_heads = 2
d_ff = 64
n_positions = 64
[[stages]]
objective = { use = "embed", pooling = "mean" }
data = "pairs.jsonl"
steps = 10
batch_size = 8
seq_len = 32
lr = 2e-3
''')
