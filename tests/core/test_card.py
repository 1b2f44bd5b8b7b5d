"""The model card: README.md in Hugging Face's format in every artifact and export-hf folder,
parsed by huggingface_hub.ModelCard.load."""
from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

import modkit
from modkit.card import model_card
from modkit.builder.hf.convert import export_hf

from specs import tiny_gpt_parts, write_corpus


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card")
    lines = [line for line in write_corpus(folder, 8000).read_text().splitlines() if line.strip()]
    (folder / "train.csv").write_text("review,stars\n" + "".join(
        f"\"{line.replace(chr(34), chr(39))}\",{'pos' if len(line) % 2 else 'neg'}\n" for line in lines))
    (folder / "spec.toml").write_text(
        f'name = "carded"\n{tiny_gpt_parts()}\n[[stages]]\n'
        'objective = { use = "classify", labels = ["neg", "pos"] }\n'
        'data = { path = "train.csv", fields = { text = "review", label = "stars" } }\nsteps = 3\nbatch_size = 4\n'
        'seq_len = 24\n')
    manifest = modkit.build(folder / "spec.toml", folder / "out", progress=False, echo=lambda _: None)
    return folder, manifest


def test_every_artifact_has_a_card_huggingface_hub_reads(artifact):
    folder, manifest = artifact
    card = ModelCard.load(folder / "out" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "modkit" and data["pipeline_tag"] == "text-classification"
    assert data["datasets"] == ["train.csv"]
    assert "heldout_accuracy" in data["metrics"] and "eval_loss" in data["metrics"]
    assert {"modkit", "classify", "onnx"} <= set(data["tags"])
    text = card.text
    sha = manifest["stages"][0]["data"]["files"]["train.csv"]
    assert f"| 1 | data | train.csv | `{sha}` |" in text
    assert f"| heldout_accuracy | {manifest['stages'][0]['eval']['heldout_accuracy']:.6g} |" in text
    assert f"| max_abs_diff | {manifest['parity']['max_abs_diff']:.3g} |" in text
    assert "## Cost and energy" in text and "CPU time" in text
    spec = json.loads(text.split("```json\n")[1].split("\n```")[0])
    assert spec == manifest["spec"]


def test_export_hf_folder_has_a_card_for_transformers(artifact, tmp_path):
    folder, manifest = artifact
    export_hf(folder / "out", tmp_path / "hf")
    card = ModelCard.load(tmp_path / "hf" / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert 'pipeline("text-classification", model=' in card.text


def test_a_hub_base_model_and_measured_energy_go_into_the_card():
    manifest = {"name": "m", "task": {"task": "generate"}, "stages": [{"objective": "clm", "eval": {}}],
                "components": {"backbone": {"name": "t5", "hub": {"repo_id": "google-t5/t5-small", "revision": "a" * 40}}},
                "resources": {"cpu_seconds": 3.0, "cpu_count": 2, "energy_kwh": 0.0012, "energy_source": "rapl"}}
    card = ModelCard(model_card(manifest))
    assert card.data.base_model == "google-t5/t5-small" and card.data.pipeline_tag == "text-generation"
    assert f"google-t5/t5-small @ {'a' * 40}" in card.text and "0.0012 kWh (measured: rapl)" in card.text
