"""A third-party objective and task (examples/plugin-regress) build, export and are served by
`modkit run` without any change to modkit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import modkit
from conftest import import_or_skip
from modkit.builder.assembly import load_torch_model
from modkit.cli import main

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin-regress"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    import_or_skip("modkit_regress", "pip install -e examples/plugin-regress")
    tmp = tmp_path_factory.mktemp("regress")
    rows = (PLUGIN / "lengths.jsonl").read_text().splitlines()
    (tmp / "train.jsonl").write_text("\n".join(rows[:150]) + "\n")
    (tmp / "test.jsonl").write_text("\n".join(rows[150:160]) + "\n")
    (tmp / "corpus.txt").write_text("\n".join(json.loads(r)["text"] for r in rows))
    (tmp / "spec.toml").write_text('''
name = "regress"
[tokenizer]
use = "bpe"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
use = "gpt"
d_model = 32
n_layers = 2
n_heads = 4
n_positions = 64
[[stages]]
objective = { use = "regress" }
data = "train.jsonl"
steps = 60
batch_size = 16
seq_len = 48
''')
    modkit.build(tmp / "spec.toml", tmp / "out", progress=False, echo=lambda _: None)
    return tmp


def test_regress_builds_with_its_own_graph_and_learns(artifact):
    manifest = json.loads((artifact / "out" / "manifest.json").read_text())
    assert manifest["task"]["task"] == "regress" and manifest["graphs"] == ["model.onnx"]
    assert manifest["components"]["stages"][0]["objective"]["plugin"] == "regress"
    stage = manifest["stages"][0]
    assert stage["loss_last_10"] < stage["loss_first_10"]
    assert stage["eval"]["heldout_mse"] < stage["eval"]["heldout_baseline_mse"], "no better than the mean"


def test_modkit_run_serves_regress_with_torchs_numbers(artifact):
    texts = ["one two three", "a much longer line of text with many more words in it than the first"]
    result = CliRunner().invoke(main, ["run", str(artifact / "out"), "--json", *[a for t in texts for a in ("--text", t)]])
    assert result.exit_code == 0, result.output
    served = [json.loads(line)["value"] for line in result.output.splitlines()]
    model, tok = load_torch_model(artifact / "out"), modkit.load_tokenizer(artifact / "out")
    append = json.loads((artifact / "out" / "manifest.json").read_text())["task"]["append_ids"]
    with torch.no_grad():
        for text, value in zip(texts, served):
            ids = torch.tensor([tok.encode(text) + append])
            assert value == pytest.approx(model(ids, torch.ones_like(ids)).logits.item(), abs=1e-4)


def test_modkit_run_scores_a_file_with_gold_values(artifact):
    result = CliRunner().invoke(main, ["run", str(artifact / "out"), "--file", str(artifact / "test.jsonl")])
    assert result.exit_code == 0, result.output
    assert "mse " in result.output and "labelled 10" in result.output


def test_modkit_serve_takes_gold_numbers_and_still_refuses_numbers_as_text(artifact):
    from starlette.testclient import TestClient

    from modkit.runtime import Runtime
    from modkit.serve.app import create_app

    runtime = Runtime(artifact / "out")
    with TestClient(create_app(runtime)) as client:
        r = client.post("/v1/run", json={"inputs": [{"text": "one two three", "value": 0.3}, "four five"]})
        assert r.status_code == 200, r.text
        expected = runtime.run(["one two three", "four five"])
        assert [x["value"] for x in r.json()["results"]] == pytest.approx([x["value"] for x in expected], abs=1e-6)
        for bad, message in [({"text": 3}, "inputs[0].text: expected a string"),
                             ({"text": "a", "value": True}, "inputs[0].value: expected a string"),
                             ({"text": "a", "other": 1}, "unknown field 'other'")]:
            r = client.post("/v1/run", json={"inputs": [bad]})
            assert r.status_code == 422 and message in r.json()["error"], r.text
