"""The manifest schema (modkit.manifest): relative POSIX file paths, older version-1 manifests,
and the JSON written the same as the one read."""
from __future__ import annotations

import json

import pytest

import modkit
from modkit.errors import ArtifactError
from modkit.manifest import MANIFEST_VERSION, Manifest, is_artifact_path

SHA = "0" * 64


def minimal(**changes) -> dict:
    """A version-1 manifest as modkit 0.1 wrote it before stages had several objectives, kept
    PEFT methods, generation defaults or kept checkpoints."""
    doc = {"format": "modkit-artifact", "version": 1, "modkit_version": "0.1.0", "name": "old", "seed": 3,
           "spec": {"name": "old"},
           "components": {"tokenizer": {"name": "bpe", "plugin": "bpe", "version": "0.1.0"},
                          "backbone": {"name": "gpt", "plugin": "gpt", "version": "0.1.0", "options": {"d_model": 32}},
                          "stages": [{"objective": {"name": "clm", "plugin": "clm", "version": "0.1.0", "options": {}},
                                      "peft": [{"name": "lora", "plugin": "lora", "version": "0.1.0",
                                                "options": {"r": 4}}]}]},
           "task": {"task": "generate", "max_length": 32}, "stages": [{"objective": "clm", "steps": 4}],
           "files": {"model.safetensors": SHA, "tokenizer.json": SHA}}
    doc.update(changes)
    return doc


def write(folder, doc) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("name, ok", [
    ("model.onnx", True), ("checkpoints/stage1-step000006.safetensors", True),
    ("/etc/passwd", False), ("../model.onnx", False), ("checkpoints/../../x", False), ("a\\b.onnx", False),
    ("./model.onnx", False), ("a//b", False), ("", False),
])
def test_file_names_are_relative_posix_paths_inside_the_artifact(name, ok):
    assert is_artifact_path(name) is ok


@pytest.mark.parametrize("field, value", [("files", {"/abs/model.onnx": SHA}), ("files", {"../model.onnx": SHA}),
                                          ("files", {"model.onnx": "not a sha"})])
def test_a_manifest_with_a_file_outside_the_artifact_is_refused(tmp_path, field, value):
    write(tmp_path, minimal(**{field: value}))
    with pytest.raises(modkit.ArtifactError, match="'files' must map every file of the artifact to its sha256"):
        Manifest.read(tmp_path, verify=False)


def test_an_older_version_1_manifest_reads_with_its_defaults(tmp_path):
    write(tmp_path, minimal())
    m = Manifest.read(tmp_path, verify=False)
    assert m.version == 1 <= MANIFEST_VERSION
    [stage] = m.components.stages
    assert [o.name for o in stage.all_objectives()] == ["clm"] and stage.all_objectives()[0].weight == 1.0
    assert not stage.peft[0].kept and not stage.peft[0].merged
    assert m.generation is None and m.checkpoints == [] and m.task.task == "generate"
    assert m.stages[0].peak_memory is None  # built before the peak memory was measured
    assert m.to_json() == minimal()  # what it does not hold is not made up when written back


def test_keys_of_a_later_modkit_are_kept_and_a_broken_record_is_named(tmp_path):
    write(tmp_path, minimal(new_key={"a": 1}, task={"task": "generate", "later": True}))
    m = Manifest.read(tmp_path, verify=False)
    assert m.to_json()["new_key"] == {"a": 1} and m.task.model_dump()["later"] is True
    write(tmp_path, minimal(components={"tokenizer": {"name": "bpe"}, "backbone": {"name": "gpt"}, "stages": []}))
    with pytest.raises(modkit.ArtifactError, match="components.stages: List should have at least 1 item"):
        Manifest.read(tmp_path, verify=False)


def test_the_artifact_a_build_writes_is_its_manifest_read_back(tmp_path):
    from test_train import lm_spec

    manifest = modkit.build(lm_spec(tmp_path, steps=1), tmp_path / "out", progress=False, echo=lambda _: None)
    read = Manifest.read(tmp_path / "out")
    assert read.to_json() == manifest == json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert read.components.backbone.name == "gpt" and "model.safetensors" in read.files
    [peak] = read.stages[0].peak_memory  # one process: one record
    assert (peak.rank, peak.device, peak.rss_since) == (0, "cpu", "stage start")
    assert peak.peak_rss_bytes >= peak.start_rss_bytes > 0 and peak.peak_allocated_bytes is None


def test_a_task_reads_the_record_through_its_own_model_naming_a_missing_or_mistyped_field():
    from modkit.manifest import TaskRecord
    from modkit_plugins.objectives.records import TokenClassifyRecord

    given = TaskRecord(task="token-classify", tags=["O", "B-X"], max_length=16, later_key=1)
    typed = given.typed(TokenClassifyRecord, "out/manifest.json")
    assert typed.tags == ["O", "B-X"] and typed.pad_token_id == 0 and typed["later_key"] == 1
    assert typed.as_dict() == given.as_dict()  # the manifest keeps what was given, no defaults added
    with pytest.raises(ArtifactError, match=r"out/manifest.json: task.tags: Field required"):
        TaskRecord(task="token-classify").typed(TokenClassifyRecord, "out/manifest.json")
    with pytest.raises(ArtifactError, match=r"task.tags: Input should be a valid list"):
        TaskRecord(task="token-classify", tags="O").typed(TokenClassifyRecord, "out/manifest.json")
