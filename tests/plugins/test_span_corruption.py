"""T5's span corruption: T5's lengths, spans of the right density and mean, the original
recovered from input + target, and a tiny T5 pretrained with it and served as seq2seq."""
from __future__ import annotations

import torch

from modkit.builder.build import build
from modkit.runtime import Runtime
from modkit_plugins.objectives.spans import corrupt, input_and_target_lengths, random_spans_noise_mask


def test_lengths_are_t5s():
    # run_t5_mlm_flax.py's figures for T5's defaults: 568 raw tokens fill 512 inputs, 114 targets
    assert input_and_target_lengths(512, 0.15, 3.0) == (568, 114)
    assert input_and_target_lengths(128, 0.15, 3.0) == (141, 29)


def uncorrupt(inputs: list[int], targets: list[int], is_sentinel) -> list[int]:
    spans, k = {}, None
    for t in targets[:-1]:
        if is_sentinel(t):
            k = t
            spans[k] = []
        else:
            spans[k].append(t)
    out = []
    for t in inputs[:-1]:
        out += spans[t] if is_sentinel(t) else [t]
    return out


def test_noise_mask_density_spans_and_recovery():
    g = torch.Generator().manual_seed(0)
    noise = spans = total = 0
    lengths = []
    for _ in range(2000):
        tokens = torch.randint(0, 900, (141,), generator=g).tolist()
        mask = random_spans_noise_mask(141, 0.15, 3.0, g)
        assert len(mask) == 141 and not mask[0] and mask[-1]  # starts kept, ends in noise, as T5's
        runs = [len(r) for r in "".join("x" if m else "." for m in mask).split(".") if r]
        assert sum(mask) == round(141 * 0.15) and len(runs) == round(sum(mask) / 3.0)
        lengths += runs
        noise, spans, total = noise + sum(mask), spans + len(runs), total + len(mask)
        inputs, targets = corrupt(tokens, mask, lambda k: 999 - k, eos=1000)
        assert len(inputs) == 128  # 141 raw tokens fill seq_len 128 exactly
        assert targets[0] == 999 and targets[-2:] == [999 - len(runs), 1000]  # <extra_id_0> first; final sentinel, eos
        assert uncorrupt(inputs, targets, lambda t: 990 <= t < 1000) == tokens
    assert abs(noise / total - 0.15) < 0.005 and abs(sum(lengths) / len(lengths) - 3.0) < 0.1


def test_tiny_t5_pretrains_and_serves_sentinels(tmp_path, corpus_path):
    (tmp_path / "c.txt").write_text(corpus_path.read_text()[:40_000])
    (tmp_path / "spec.toml").write_text("""
name = "tiny-t5-spans"
[tokenizer]
use = "bpe"
style = "byte-level"
vocab_size = 400
train_on = "c.txt"
[backbone]
use = "t5"
d_model = 32
d_kv = 8
d_ff = 64
encoder_layers = 1
decoder_layers = 1
n_heads = 4
extra_ids = 20
[[stages]]
objective = { use = "span-corruption", max_new_tokens = 12 }
data = "c.txt"
steps = 30
batch_size = 8
seq_len = 32
lr = 3e-3
""")
    manifest = build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    report = manifest["stages"][0]
    assert manifest["components"]["backbone"]["options"]["vocab_size"] == 420  # the tokenizer's 400 + extra_ids
    assert report["loss_last_10"] < report["loss_first_10"] - 1.0
    assert manifest["task"]["task"] == "seq2seq" and manifest["task"]["sentinel_base"] == 419
    [result] = Runtime(tmp_path / "out").run(["The module provides <extra_id_0> functions."])
    assert result["generated"].startswith("<extra_id_0>")  # every target starts with the first sentinel


def test_t5_reserves_t5s_100_sentinels_by_default_and_says_what_to_write_without(tmp_path, corpus_path):
    from click.testing import CliRunner

    from modkit.cli import main

    (tmp_path / "c.txt").write_text(corpus_path.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    spec = tmp_path / "spec.toml"
    body = ('name = "spans"\n[tokenizer]\nuse = "bpe"\nstyle = "byte-level"\nvocab_size = 400\ntrain_on = "c.txt"\n'
            '[backbone]\nuse = "t5"\nd_model = 16\nd_kv = 8\nd_ff = 32\nencoder_layers = 1\ndecoder_layers = 1\n'
            'n_heads = 2\n{extra}[[stages]]\nobjective = {{ use = "span-corruption" }}\ndata = "c.txt"\nsteps = 1\n'
            'batch_size = 2\nseq_len = 16\n[export]\nonnx = false\n')
    spec.write_text(body.format(extra=""))
    manifest = build(spec, tmp_path / "out", progress=False, echo=lambda m: None)
    assert manifest["components"]["backbone"]["options"]["extra_ids"] == 100
    assert manifest["components"]["backbone"]["options"]["vocab_size"] == 500  # the tokenizer's 400 + 100
    spec.write_text(body.format(extra="extra_ids = 0\n"))
    r = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "none"), "--quiet"])
    assert r.exit_code == 2, r.output
    assert ("stages[0].objective ('span-corruption'): span-corruption needs sentinel ids, and the backbone's "
            "extra_ids is 0: write extra_ids = 100 under [backbone]") in r.output
