"""Optimised and int8 graphs: what the build records, and `--precision int8` running them."""
from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from modkit.builder.optimize import fused_operators, optimize_graph
from modkit.cli import main
from modkit.runtime import Runtime
from modkit.runtime.artifact import read_manifest


@pytest.mark.parametrize("fixture, graphs", [
    ("gpt_artifact", ["model.onnx", "model_with_past.onnx"]),
    ("classifier_artifact", ["model.onnx"]),
    ("seq2seq_artifact", ["encoder.onnx", "decoder.onnx"]),
])
def test_build_ships_fused_graphs_that_passed_parity_and_int8_twins(request, fixture, graphs):
    artifact = request.getfixturevalue(fixture)
    parity = read_manifest(artifact)["parity"]
    assert parity["optimize"]["level"] == "transformer"  # the default: fastest level that passes
    for graph in graphs:
        fused = fused_operators(artifact / graph)
        assert fused == parity["optimize"]["fused"][graph]
        assert fused.get("SkipLayerNormalization", 0) >= 2  # residual add + layer norm, fused
        assert (artifact / graph.replace(".onnx", ".int8.onnx")).exists()
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
