"""`modkit preview`: the examples a stage's objectives draw, as the build draws them."""
from __future__ import annotations

import json

from click.testing import CliRunner

import modkit
from modkit.cli import main

SPEC = """
name = "preview"
seed = 3
[tokenizer]
use = "wordpiece"
vocab_size = 300
train_on = "c.txt"
[backbone]
use = "bert"
d_model = 16
n_layers = 1
n_heads = 2
[[stages]]
objective = {{ use = "clm" }}
data = "c.txt"
steps = 1
[[stages]]
objective = [{{ use = "mlm", mlm_probability = {p} }}, {{ use = "nsp" }}]
data = "c.txt"
steps = 1
batch_size = 8
seq_len = 24
"""


def write(tmp_path, corpus_path, p=0.15):
    (tmp_path / "c.txt").write_text(corpus_path.read_text()[:30_000])
    (tmp_path / "spec.toml").write_text(SPEC.format(p=p).replace('{ use = "clm" }', '{ use = "mlm" }'))
    return tmp_path / "spec.toml"


def test_preview_draws_what_training_draws(tmp_path, corpus_path):
    spec = write(tmp_path, corpus_path)
    records = list(modkit.preview(spec, stage=1, n=12))
    mlm = [r for r in records if r["objective"] == "mlm"]
    nsp = [r for r in records if r["objective"] == "nsp"]
    assert len(mlm) == len(nsp) == 12 and {r["step"] for r in mlm} == {0, 1}
    for r in mlm:
        assert len(r["input_ids"]) == len(r["labels"]) == len(r["original_ids"]) == 24
        for inp, lab, orig in zip(r["input_ids"], r["labels"], r["original_ids"]):
            assert lab in (-100, orig) and (lab != -100 or inp == orig)
    assert all(r["next_sentence_label"] in (0, 1) and len(r["token_type_ids"]) == len(r["input_ids"]) for r in nsp)
    assert all(r["input_text"].startswith("[CLS]") for r in records)

    # the spec's seed decides the draws: the same again, others under another seed
    assert list(modkit.preview(spec, stage=1, n=12)) == records
    other = list(modkit.preview(spec, stage=1, n=12, overrides=["seed=4"]))
    assert [r["input_ids"] for r in other] != [r["input_ids"] for r in records]


def test_preview_command_prints_json_lines(tmp_path, corpus_path):
    spec = write(tmp_path, corpus_path, p=0.5)
    result = CliRunner().invoke(main, ["preview", str(spec), "--stage", "1", "-n", "3", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["objective"] for r in lines] == ["mlm"] * 3 + ["nsp"] * 3
    chosen = sum(sum(t != -100 for t in r["labels"]) for r in lines[:3]) / sum(len(r["labels"]) - 2 for r in lines[:3])
    assert 0.3 < chosen < 0.7  # the spec's mlm_probability, not the default
    text = CliRunner().invoke(main, ["preview", str(spec), "--stage", "1", "-n", "1"])
    assert "input_text" in text.stdout and "next_sentence_label" in text.stdout
    bad = CliRunner().invoke(main, ["preview", str(spec), "--stage", "5"])
    assert bad.exit_code == 2 and "no stages[5]" in bad.output
