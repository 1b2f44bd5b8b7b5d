"""Optimised and int8 graphs: what the build records, and `--precision int8` running them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import modkit
from modkit.builder.export import optimize
from modkit.builder.export.optimize import fused_operators, optimize_graph
from modkit.cli import main
from modkit.runtime import Runtime
from modkit.runtime.artifact import read_manifest

from .conftest import EXAMPLES


# every fixture has 2 layers: the graphs whose attention fuses have one Attention node per layer
@pytest.mark.parametrize("fixture, graphs, attention", [
    ("gpt_artifact", ["model.onnx", "model_with_past.onnx"], [0, 0]),  # causal: not fused
    ("classifier_artifact", ["model.onnx"], [2]),
    ("seq2seq_artifact", ["encoder.onnx", "decoder.onnx"], [2, 0]),
])
def test_build_ships_fused_graphs_that_passed_parity_and_int8_twins(request, fixture, graphs, attention):
    artifact = request.getfixturevalue(fixture)
    parity = read_manifest(artifact)["parity"]
    assert parity["optimize"]["level"] == "transformer"  # the default: fastest level that passes
    assert parity["optimize"]["fallbacks"] == []
    for graph, n_attention in zip(graphs, attention):
        fused = fused_operators(artifact / graph)
        assert fused == parity["optimize"]["fused"][graph]
        assert fused.get("SkipLayerNormalization", 0) >= 2  # residual add + layer norm, fused
        assert fused.get("Attention", 0) == n_attention
        int8 = fused_operators(artifact / graph.replace(".onnx", ".int8.onnx"))
        assert int8.get("QAttention", 0) == n_attention  # fused attention quantised too
    int8 = parity["int8"]
    for name, figures in int8.items():
        sizes = [figures] if "fp32_bytes" in figures else [figures["encoder"], figures["decoder"]]
        assert all(s["int8_bytes"] < s["fp32_bytes"] for s in sizes)
        agreement = figures.get("top1_agreement", figures.get("token_agreement"))
        assert 0.0 <= agreement <= 1.0


def test_optimise_levels_keep_the_graph_s_outputs(classifier_artifact, tmp_path):
    feed = {"input_ids": np.array([[2, 40, 41, 42, 3], [2, 50, 3, 0, 0]]),
            "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    reference = None
    for level in ("none", "basic", "transformer"):
        path = tmp_path / f"{level}.onnx"
        shutil.copy(classifier_artifact / "model.onnx", path)
        optimize_graph(path, level)
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feed)[0]
        reference = got if reference is None else reference
        np.testing.assert_allclose(got, reference, atol=1e-5)


def test_precision_int8_runs_the_int8_graphs(classifier_artifact, gpt_artifact, seq2seq_artifact):
    texts = ["connect a socket", "parse the command line arguments", "the date today"]
    fp32 = Runtime(classifier_artifact).run(texts)
    int8 = Runtime(classifier_artifact, precision="int8").run(texts)
    assert [a["probabilities"] != b["probabilities"] for a, b in zip(fp32, int8)] == [True] * 3
    assert [r["label"] for r in int8] and all(set(r["probabilities"]) == set(fp32[0]["probabilities"]) for r in int8)
    for artifact in (gpt_artifact, seq2seq_artifact):
        r = CliRunner().invoke(main, ["run", str(artifact), "--text", "import the", "--precision", "int8",
                                      "--max-new-tokens", "4", "--json"])
        assert r.exit_code == 0, r.output


def test_precision_int8_without_int8_graphs_is_a_user_error(classifier_artifact, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(classifier_artifact, plain)
    (plain / "model.int8.onnx").unlink()
    import json

    manifest = json.loads((plain / "manifest.json").read_text())
    del manifest["files"]["model.int8.onnx"]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    r = CliRunner().invoke(main, ["run", str(plain), "--text", "x", "--precision", "int8"])
    assert r.exit_code == 2 and "no int8 graphs" in r.output


def _build_classifier(folder, optimize: str = "auto") -> dict:
    folder.mkdir(exist_ok=True)
    rows = (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines()[:200:4]
    (folder / "data.jsonl").write_text("\n".join(rows) + "\n")
    labels = sorted({json.loads(r)["label"] for r in rows})
    (folder / "spec.toml").write_text(f'''
name = "fallback"
[tokenizer]
use = "wordpiece"
vocab_size = 200
train_on = "data.jsonl"
[backbone]
use = "bert"
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
n_positions = 64
[[stages]]
objective = {{ use = "classify", labels = {json.dumps(labels)} }}
data = "data.jsonl"
steps = 2
batch_size = 4
seq_len = 32
[export]
optimize = "{optimize}"
''')
    return modkit.build(folder / "spec.toml", folder / "out", progress=False, echo=lambda _: None)


def test_auto_falls_back_when_the_fused_graph_fails_parity(tmp_path, monkeypatch):
    """The optimizer's output made wrong on purpose (the fused attention's weights
    shifted): the real parity check rejects it and the build ships the next level."""
    real_fuse = optimize._fuse

    def wrong_fuse(path, out):
        fused = real_fuse(path, out)
        graph = onnx.load(str(out))
        attention = next(n for n in graph.graph.node if n.op_type == "Attention")
        weight = next(t for t in graph.graph.initializer if t.name == attention.input[1])
        values = numpy_helper.to_array(weight).copy()
        values[0] += 1.0  # the first hidden unit leaks into every query, key and value
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))
        onnx.save(graph, str(out))
        return fused

    monkeypatch.setattr(optimize, "_fuse", wrong_fuse)
    manifest = _build_classifier(tmp_path)
    chosen = manifest["parity"]["optimize"]
    assert chosen["level"] == "basic"
    [fallback] = chosen["fallbacks"]
    assert fallback["level"] == "transformer" and "parity check failed" in fallback["reason"]
    assert "Attention" not in fused_operators(tmp_path / "out" / "model.onnx")


def test_auto_falls_back_when_the_optimizer_raises(tmp_path, monkeypatch):
    def broken_optimizer(*args, **kwargs):
        raise RuntimeError("cannot fuse this graph")

    monkeypatch.setattr("onnxruntime.transformers.optimizer.optimize_model", broken_optimizer)
    manifest = _build_classifier(tmp_path / "auto")
    [fallback] = manifest["parity"]["optimize"]["fallbacks"]
    assert manifest["parity"]["optimize"]["level"] == "basic"
    assert fallback == {"level": "transformer", "reason": "model.onnx: onnxruntime's transformer optimizer "
                                                          "failed: RuntimeError: cannot fuse this graph"}
    # asked for by name, the level is not swapped for another: the build fails and says why
    with pytest.raises(optimize.OptimizeError, match="cannot fuse this graph"):
        _build_classifier(tmp_path / "named", optimize="transformer")


@pytest.mark.parametrize("fixture, graphs", [
    ("gpt_artifact", ["model.onnx", "model_with_past.onnx"]),
    ("classifier_artifact", ["model.onnx"]),
    ("seq2seq_artifact", ["encoder.onnx", "decoder.onnx"]),
])
def test_fp16_twins_are_half_precision_graphs_close_to_fp32(request, fixture, graphs):
    """fp16 graphs are for GPUs; here they are checked for what a CPU can check: their
    weights are float16, their inputs and outputs those of fp32, and onnxruntime's CPU
    provider runs them (the build did, for the figures) close to fp32."""
    artifact = request.getfixturevalue(fixture)
    for graph in graphs:
        fp32, fp16 = (onnx.load(str(artifact / name)) for name in (graph, graph.replace(".onnx", ".fp16.onnx")))
        assert [(i.name, i.type) for i in fp16.graph.input] == [(i.name, i.type) for i in fp32.graph.input]
        assert [(o.name, o.type) for o in fp16.graph.output] == [(o.name, o.type) for o in fp32.graph.output]
        kinds = {t.data_type for t in fp16.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT,
                                                                                  onnx.TensorProto.FLOAT16)}
        assert kinds == {onnx.TensorProto.FLOAT16}
    for name, figures in read_manifest(artifact)["parity"]["fp16"].items():
        sizes = [figures] if "fp32_bytes" in figures else [figures["encoder"], figures["decoder"]]
        assert all(s["fp16_bytes"] < s["fp32_bytes"] for s in sizes)  # tiny graphs: not quite half
        if "max_abs_diff" in figures:
            assert figures["max_abs_diff"] < 0.05 and figures["top1_agreement"] >= 0.9
        else:
            assert 0.0 <= figures["token_agreement"] <= 1.0


def test_precision_fp16_runs_on_the_cpu_close_to_fp32(classifier_artifact):
    texts = ["connect a socket", "parse the command line arguments", "the date today"]
    fp32 = Runtime(classifier_artifact).run(texts)
    fp16 = Runtime(classifier_artifact, precision="fp16").run(texts)
    for a, b in zip(fp32, fp16):
        assert a["probabilities"].keys() == b["probabilities"].keys()
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) < 0.01


def test_classifier_records_int8_and_fp16_accuracy_on_the_held_back_examples(classifier_artifact):
    manifest = read_manifest(classifier_artifact)
    torch_eval = manifest["stages"][-1]["eval"]  # the build's own held-back figures, from torch
    for precision in ("int8", "fp16"):
        figures = manifest["parity"][precision]["model.onnx"]
        assert figures["heldout_examples"] == torch_eval["heldout_examples"] > 4  # all of them, not the parity rows
        # the fp32 graph classifies the held-back examples as the torch model did
        assert figures["heldout_accuracy_fp32"] == pytest.approx(torch_eval["heldout_accuracy"])
        change = 100 * (figures[f"heldout_accuracy_{precision}"] - figures["heldout_accuracy_fp32"])
        assert figures["accuracy_change_points"] == pytest.approx(change)


def test_generation_agreement_covers_prompts_from_every_held_back_row(gpt_artifact):
    from modkit.builder.export.precision import held_back_prompts

    ids = np.arange(40).reshape(2, 20)
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    assert held_back_prompts({"input_ids": ids, "attention_mask": mask}, length=4, every=8) == [
        [0, 1, 2, 3], [8, 9, 10, 11], [16, 17, 18, 19], [20, 21, 22, 23]]  # the padding is no prompt
    figures = read_manifest(gpt_artifact)["parity"]["int8"]["model_with_past.onnx"]
    assert figures["prompts"] > 2  # more generations than the parity check's two rows
