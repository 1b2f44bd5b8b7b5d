"""BART's noising functions against their definitions, and a tiny BART pretrained to denoise."""
from __future__ import annotations

from collections import Counter

import torch

from modkit.builder.build import build
from modkit.runtime import Runtime
from modkit_plugins.objectives.noising import (
    permute_sentences, rotate, text_infilling, token_deletion, token_masking)

MASK = 0


def test_text_infilling_spans_are_poisson_3():
    g = torch.Generator().manual_seed(0)
    lengths, removed, total, masks, zero_spans = [], 0, 0, 0, 0
    for _ in range(200):  # long texts: stopping at the budget biases the spans of a short one (as fairseq's)
        tokens = torch.randint(1, 500, (2000,), generator=g).tolist()
        noised, spans = text_infilling(tokens, 0.3, 3.0, MASK, g)
        assert sum(spans) == 600 and noised.count(MASK) == len(spans)  # one mask per span, empty ones too
        assert len(noised) == 2000 - 600 + len(spans)
        lengths += spans[:-1]  # the last span is cut to the budget
        zero_spans += spans.count(0)
        removed, total, masks = removed + sum(spans), total + len(tokens), masks + len(spans)
    mean = sum(lengths) / len(lengths)
    var = sum((x - mean) ** 2 for x in lengths) / len(lengths)
    assert abs(removed / total - 0.3) < 1e-9
    assert abs(mean - 3.0) < 0.05 and abs(var - 3.0) < 0.15  # Poisson: both λ
    assert zero_spans > 0


def test_infilling_keeps_the_order_of_what_it_keeps():
    g = torch.Generator().manual_seed(1)
    tokens = list(range(1, 201))
    noised, _ = text_infilling(tokens, 0.3, 3.0, MASK, g)
    kept = [t for t in noised if t != MASK]
    assert kept == sorted(kept) and len(kept) == 140


def test_masking_deletion_permutation_rotation():
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(1, 500, (20000,), generator=g).tolist()
    assert abs(token_masking(tokens, 0.15, MASK, g).count(MASK) / len(tokens) - 0.15) < 0.01
    assert abs(1 - len(token_deletion(tokens, 0.2, g)) / len(tokens) - 0.2) < 0.01
    sentences = [[i, i + 100, i + 200] for i in range(10)]
    permuted = permute_sentences(sentences, 1.0, g)
    assert sorted(permuted) == sorted(sentences) and permuted != sentences
    rotated = rotate(tokens[:50], g)
    assert Counter(rotated) == Counter(tokens[:50]) and rotated != tokens[:50]
    k = rotated.index(tokens[0]) if tokens[0] in rotated else 0
    assert rotated[k:] + rotated[:k] == tokens[:50]


def test_tiny_bart_learns_to_denoise(tmp_path, corpus_path):
    (tmp_path / "c.txt").write_text(corpus_path.read_text()[:40_000])
    (tmp_path / "spec.toml").write_text("""
name = "tiny-bart-denoise"
[tokenizer]
use = "bpe"
style = "byte-level"
vocab_size = 400
train_on = "c.txt"
special_tokens = { bos = "<s>", eos = "</s>", pad = "<pad>", mask = "<mask>" }
[backbone]
use = "bart"
d_model = 32
encoder_layers = 1
decoder_layers = 1
n_heads = 4
d_ff = 64
n_positions = 64
[[stages]]
objective = { use = "denoise", max_new_tokens = 16 }
data = "c.txt"
steps = 30
batch_size = 8
seq_len = 48
lr = 3e-3
""")
    manifest = build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    report = manifest["stages"][0]
    assert report["loss_last_10"] < report["loss_first_10"] - 0.4
    assert manifest["task"]["task"] == "seq2seq" and manifest["parity"]["greedy_tokens_equal"]
    runtime = Runtime(tmp_path / "out")
    assert runtime.task["allow_special"]  # "<mask>" in a served text is the mask token
    [result] = runtime.run(["The <mask> module provides functions."])
    assert isinstance(result["generated"], str)
