"""Export follows the task, not the family; impossible task/backbone pairs fail before training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import modkit
from modkit.errors import UserError
from modkit.runtime import Runtime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _data(tmp_path: Path) -> None:
    rows = [json.loads(r) for r in (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines()[::6]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "corpus.txt").write_text("\n".join(r["text"] for r in rows))


def _spec(tmp_path: Path, backbone: str, objective: str, steps: int = 6, then: str = "") -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''
name = "pair"
[tokenizer]
use = "bpe"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
{backbone}
[[stages]]
objective = {objective}
data = "train.jsonl"
steps = {steps}
batch_size = 4
seq_len = 32
{then}''')
    return spec


@pytest.mark.parametrize("backbone", [
    'use = "bart"\nd_model = 32\nencoder_layers = 1\ndecoder_layers = 1\nn_heads = 2\nd_ff = 64\nn_positions = 64',
    'use = "t5"\nd_model = 32\nencoder_layers = 1\ndecoder_layers = 1\nn_heads = 2\nd_kv = 8\nd_ff = 64',
], ids=["bart", "t5"])
def test_an_encoder_decoder_with_classify_exports_a_classifier_graph(tmp_path, backbone):
    _data(tmp_path)
    labels = sorted({json.loads(r)["label"] for r in (tmp_path / "train.jsonl").read_text().splitlines()})
    spec = _spec(tmp_path, backbone, f'{{ use = "classify", labels = {json.dumps(labels)} }}')
    manifest = modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    assert manifest["graphs"] == ["model.onnx"], "classify serves from one classifier graph, not a seq2seq pair"
    assert manifest["parity"]["max_abs_diff"] < 1e-4
    assert not (tmp_path / "out" / "encoder.onnx").exists()
    [result] = Runtime(tmp_path / "out").run(["Create a socket."])
    assert result["label"] in labels and abs(sum(result["probabilities"].values()) - 1) < 1e-3


def test_clm_on_an_encoder_is_a_spec_error_before_training(tmp_path):
    _data(tmp_path)
    # the first stage would never end: the second stage's pair must be checked before it starts
    spec = _spec(tmp_path, 'use = "bert"\nd_model = 32\nn_layers = 1\nn_heads = 2\nd_ff = 64',
                 '{ use = "classify", labels = ["a", "b"] }', steps=10**9,
                 then='[[stages]]\nobjective = { use = "clm" }\ndata = "corpus.txt"\nsteps = 1\n')
    with pytest.raises(UserError, match=r"stages\[1\]\.objective \('clm'\).*decoder-only"):
        modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_an_objective_whose_task_nobody_serves_is_refused_before_training(tmp_path, monkeypatch):
    _data(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "orphan.py").write_text('''
import modkit
from modkit_plugins.objectives.classify_impl import Classify
from modkit_plugins.objectives.classify import ClassifyOptions

class Orphan(Classify):
    task = "orphan-task"

@modkit.hookimpl
def modkit_register_objectives(register):
    register("orphan", "orphan:Orphan", options=ClassifyOptions)
''')
    (tmp_path / "registry.toml").write_text('plugins = ["orphan"]\n')
    registry = modkit.load_registry(tmp_path / "registry.toml")
    spec = _spec(tmp_path, 'use = "gpt"\nd_model = 32\nn_layers = 1\nn_heads = 2',
                 '{ use = "orphan", labels = ["a", "b"] }', steps=10**9)
    with pytest.raises(UserError, match="task 'orphan-task' is served by no installed plugin"):
        modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None, registry=registry)
