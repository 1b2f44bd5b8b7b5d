"""modkit build end to end on tiny settings: artifact, parity, resume, determinism, runtime."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import modkit
import modkit.builder.build as build_module
from modkit.runtime.artifact import read_manifest
from modkit.cli import main
from modkit.builder.export.onnx import ParityError, check_parity
from modkit.fileio import sha256_file
from modkit.runtime import Runtime
from specs import assert_transformers_loads_quietly, tiny_gpt_parts, write_corpus

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt"
LABELS = ["argparse", "datetime", "socket", "sqlite3", "unittest"]


def tiny_spec(folder: Path, *, steps=(12, 8)) -> Path:
    write_corpus(folder, 40_000)
    (folder / "modules.jsonl").write_text((EXAMPLE / "modules.jsonl").read_text(encoding="utf-8"))
    spec = folder / "spec.toml"
    spec.write_text(f'''
name = "tiny"
seed = 3
{tiny_gpt_parts()}
[[stages]]
objective = {{ use = "clm" }}
data = "corpus.txt"
steps = {steps[0]}
batch_size = 4
seq_len = 32
checkpoint_every = 4
[[stages]]
objective = {{ use = "classify", labels = {json.dumps(LABELS)}, aux_lm_weight = 0.5 }}
peft = [{{ use = "lora", r = 4, alpha = 8, targets = ["attn.q", "attn.v"] }}]
data = "modules.jsonl"
steps = {steps[1]}
batch_size = 4
seq_len = 48
checkpoint_every = 3
''')
    return spec


def quiet_build(spec, out, **kw):
    return modkit.build(spec, out, progress=False, echo=lambda _: None, **kw)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("build")
    out = folder / "out"
    quiet_build(tiny_spec(folder), out)
    return out


def test_artifact_files_and_manifest(artifact):
    assert sorted(p.name for p in artifact.iterdir()) == ["README.md", "curves.png", "manifest.json", "metrics.jsonl",
                                                          "model.onnx", "model.safetensors", "tokenizer.json"]
    m = read_manifest(artifact)
    assert set(m["files"]) == {"metrics.jsonl", "model.onnx", "model.safetensors", "tokenizer.json"}
    assert all(sha256_file(artifact / f) == h for f, h in m["files"].items())
    assert m["parity"]["max_abs_diff"] < 1e-4 and m["parity"]["inputs"]["input_ids"][0] == 4
    assert m["task"]["task"] == "classify" and m["task"]["labels"] == LABELS
    pre, fine = m["stages"]
    assert pre["trainable_parameters"] == pre["total_parameters"]
    lora = 2 * 2 * 4 * (32 + 32)  # layers * targets * r * (d_in + d_out)
    head = 32 * 5 + 5
    assert fine["trainable_parameters"] == lora + head
    assert fine["peft"] == ["lora"] and "heldout_accuracy" in fine["eval"]
    assert m["components"]["stages"][1]["peft"][0]["kept"] is False  # merged away
    assert m["merge"]["methods"] == ["lora"] and m["merge"]["max_abs_diff"] < m["merge"]["tolerance"] == 1e-4
    assert m["components"]["backbone"]["options"]["vocab_size"] == 300


def test_each_stage_reports_the_figures_that_mean_something_for_its_objective(artifact):
    clm, classify = (stage["eval"] for stage in read_manifest(artifact)["stages"])
    assert set(clm) == {"eval_loss", "eval_perplexity"}  # no second held-back loss on fewer windows
    # a classifier's loss (L2 + 0.5 L1) has no perplexity
    assert set(classify) == {"eval_loss", "heldout_accuracy", "majority_baseline", "heldout_examples"}


def test_artifact_is_readable_by_other_users_as_the_umask_allows(artifact):
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o777 & ~umask
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in artifact.iterdir()} == \
        {p.name: 0o666 & ~umask for p in artifact.iterdir()}


def test_no_work_folder_left_behind(artifact):
    assert [p.name for p in artifact.parent.iterdir() if p.name.startswith(".")] == []


def test_same_spec_and_seed_give_identical_weights(artifact, tmp_path):
    quiet_build(tiny_spec(tmp_path), tmp_path / "again")
    assert sha256_file(tmp_path / "again" / "model.safetensors") == sha256_file(artifact / "model.safetensors")


class Interrupt(Exception):
    pass


# (1, 2): in the LoRA stage before its first in-stage checkpoint (checkpoint_every = 3)
@pytest.mark.parametrize("stage, step", [(0, 6), (1, 2), (1, 5)])
def test_resumed_build_equals_uninterrupted(artifact, tmp_path, monkeypatch, stage, step):
    spec, out = tiny_spec(tmp_path), tmp_path / "out"
    real = build_module.train_stage

    def crashing(model, objective, data, stage_cfg, *, index, on_step, **kw):
        def boom(record):
            on_step(record)
            if index == stage and record.step == step:
                raise Interrupt
        return real(model, objective, data, stage_cfg, index=index, on_step=boom, **kw)

    monkeypatch.setattr(build_module, "train_stage", crashing)
    with pytest.raises(Interrupt):
        quiet_build(spec, out)
    assert not out.exists()  # nothing half-written
    monkeypatch.setattr(build_module, "train_stage", real)
    quiet_build(spec, out, resume=True)
    assert sha256_file(out / "model.safetensors") == sha256_file(artifact / "model.safetensors")


def test_resume_after_every_stage_finished_exports_the_trained_weights(artifact, tmp_path, monkeypatch):
    spec, out = tiny_spec(tmp_path), tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise Interrupt

    with monkeypatch.context() as patched:
        patched.setattr(build_module, "_export", interrupted)
        with pytest.raises(Interrupt):
            quiet_build(spec, out)
    quiet_build(spec, out, resume=True)
    assert sha256_file(out / "model.safetensors") == sha256_file(artifact / "model.safetensors")


# checkpoint.json writes: 1, 2 in stage 0 (steps 4, 8); 3 at its end; 4, 5 in stage 1 (steps 3, 6); 6 at its end
@pytest.mark.parametrize("crash_at", [3, 4])  # new weights written, the json that commits them not
def test_a_checkpoint_is_committed_whole_or_not_at_all(artifact, tmp_path, monkeypatch, crash_at):
    import modkit.builder.training.engine as train_module

    spec, out = tiny_spec(tmp_path), tmp_path / "out"
    real, calls = train_module.atomic_write_text, []

    def crashing(path, text):
        calls.append(path)
        if len(calls) == crash_at:
            raise Interrupt
        real(path, text)

    with monkeypatch.context() as patched:
        patched.setattr(train_module, "atomic_write_text", crashing)
        with pytest.raises(Interrupt):
            quiet_build(spec, out)
    quiet_build(spec, out, resume=True)
    assert sha256_file(out / "model.safetensors") == sha256_file(artifact / "model.safetensors")


def test_parity_check_fails_on_a_perturbed_graph(artifact, tmp_path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(artifact / "model.onnx"))
    init = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    array = numpy_helper.to_array(init).copy()
    array *= 1.01  # a subtle change to every weight of one tensor
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(graph, str(tmp_path / "bad.onnx"))
    model = modkit.load_model(artifact)
    inputs = {"input_ids": torch.randint(0, 300, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}
    assert check_parity(model, artifact / "model.onnx", inputs, tolerance=1e-4)["max_abs_diff"] < 1e-4
    with pytest.raises(ParityError, match="ONNX parity check failed"):
        check_parity(model, tmp_path / "bad.onnx", inputs, tolerance=1e-4)


def test_runtime_labels_match_the_torch_model(artifact):
    texts = [json.loads(line)["text"] for line in (EXAMPLE / "modules.jsonl").read_text().splitlines()[::25]]
    onnx_labels = [r["label"] for r in Runtime(artifact).run(texts)]
    model, tok = modkit.load_model(artifact), modkit.load_tokenizer(artifact)
    eos = tok.special_id("eos")
    torch_labels = []
    for t in texts:
        ids = torch.tensor([tok.encode(t)[:47] + [eos]])  # seq_len 48, as in training
        torch_labels.append(LABELS[int(model(ids, torch.ones_like(ids)).logits.argmax())])
    assert onnx_labels == torch_labels


def test_runtime_works_without_torch(artifact):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from modkit.runtime import Runtime
print(Runtime({str(artifact)!r}).run(["The socket module"])[0]["label"])
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in LABELS


def test_cli_run_json_and_corrupt_artifact(artifact, tmp_path):
    r = CliRunner().invoke(main, ["run", str(artifact), "--text", "a test case", "--json"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.output)["probabilities"]) == set(LABELS)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    with open(broken / "model.onnx", "ab") as f:
        f.write(b"x")
    r = CliRunner().invoke(main, ["run", str(broken), "--text", "x"])
    assert r.exit_code == 2 and "model.onnx: sha256 does not match" in r.output
    r = CliRunner().invoke(main, ["run", str(tmp_path), "--text", "x"])
    assert r.exit_code == 2 and "not a modkit artifact" in r.output


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("files"), "'files' must map every file"),
    (lambda m: m.update(files={}), "'files' must map every file"),
    (lambda m: m["files"].pop("model.onnx"), "model.onnx not listed in the manifest's files"),
    (lambda m: m["files"].update({"../model.onnx": "0" * 64}), "'files' must map every file"),
    (lambda m: m.pop("version"), "no valid format 'version'"),
    (lambda m: m.update(version=2, modkit_version="9.0"),
     "format version 2 \\(written by modkit 9.0\\); this modkit reads up to version 1: upgrade modkit"),
])
def test_manifest_must_list_files_and_a_known_version(artifact, tmp_path, edit, message):
    import re
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(artifact, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    edit(manifest)
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(modkit.ArtifactError, match=message):
        Runtime(edited)
    r = CliRunner().invoke(main, ["run", str(edited), "--text", "x"])
    assert r.exit_code == 2 and re.search(message, r.output), r.output


@pytest.mark.machine_dependent
def test_cuda_provider_without_cuda_is_a_clear_error(artifact):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    r = CliRunner().invoke(main, ["run", str(artifact), "--provider", "cuda", "--text", "x"])
    assert r.exit_code == 2 and "no CUDAExecutionProvider" in r.output


def test_language_model_artifact_generates(tmp_path):
    spec = tiny_spec(tmp_path, steps=(10, 1))
    text = spec.read_text()
    spec.write_text(text[: text.index("[[stages]]\nobjective = { use = \"classify\"")])
    quiet_build(spec, tmp_path / "lm")
    r = CliRunner().invoke(main, ["run", str(tmp_path / "lm"), "--text", "The module", "--max-new-tokens", "5", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert 1 <= len(out["ids"]) <= 5
    m = read_manifest(tmp_path / "lm")
    assert "model_with_past.onnx" in m["files"] and m["parity"]["with_past_greedy_tokens_equal"]
    runtime = Runtime(tmp_path / "lm")
    cached = runtime.run(["The module"], max_new_tokens=5)
    runtime.has_graph = lambda name: False  # the same tokens when every step recomputes the whole window
    assert runtime.run(["The module"], max_new_tokens=5) == cached == [out]
    # the same tokens as greedy decoding with the torch model
    model, tok = modkit.load_model(tmp_path / "lm"), modkit.load_tokenizer(tmp_path / "lm")
    ids = tok.encode("The module")
    for expected in out["ids"]:
        logits = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).logits
        assert int(logits[0, -1].argmax()) == expected
        ids.append(expected)
    # export-hf keeps the LM head: AutoModelForCausalLM computes modkit's logits
    transformers = pytest.importorskip("transformers")
    r = CliRunner().invoke(main, ["export-hf", str(tmp_path / "lm"), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    batch = torch.tensor([ids])
    with torch.no_grad():
        assert (hf(input_ids=batch).logits - model(batch).logits).abs().max() < 1e-5


def test_export_hf_says_when_a_task_head_has_no_transformers_class(artifact, tmp_path):
    # the GPT classifier of the example: transformers' GPT2ForSequenceClassification has no bias
    r = CliRunner().invoke(main, ["export-hf", str(artifact), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    assert "note: transformers' GPT classes have no sequence-classification head like this one" in r.output
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["GPT2Model"]


def test_example_spec_builds_at_reduced_steps(tmp_path):
    r = CliRunner().invoke(main, ["build", str(EXAMPLE / "spec.toml"), "-o", str(tmp_path / "ex"), "--quiet",
                                  "--set", "stages[0].steps=15", "--set", "stages[1].steps=10",
                                  "--set", "tokenizer.vocab_size=400"])
    assert r.exit_code == 0, r.output
    m = read_manifest(tmp_path / "ex")
    assert m["stages"][1]["eval"]["heldout_examples"] == 35
    assert "heldout_accuracy: " not in r.output  # figures are printed as "name value"
    assert "majority_baseline" in r.output


def test_build_fails_with_exit_1_and_no_artifact_when_parity_is_off(tmp_path):
    spec = tiny_spec(tmp_path, steps=(4, 2))
    r = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "out"), "--quiet",  # unmerged LoRA:
                                  "--set", "export.parity_tolerance=1e-12", "--set", "export.merge=false"])  # no merge check
    assert r.exit_code == 1
    assert "ONNX parity check failed: max abs difference" in r.output and "> 1e-12" in r.output
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.suffix == ".tmp"] == []


def test_transformers_loads_an_export_hf_folder_without_a_warning(artifact, tmp_path):
    pytest.importorskip("transformers")
    r = CliRunner().invoke(main, ["export-hf", str(artifact), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    assert_transformers_loads_quietly(tmp_path / "hf")


def test_building_without_torch_says_which_extra_to_install(artifact, tmp_path):
    spec = tiny_spec(tmp_path)
    code = f"""
import sys
class Block:
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from click.testing import CliRunner
from modkit.cli import main
for args in (["build", {str(spec)!r}, "-o", {str(tmp_path / "out")!r}],
             ["export-hf", {str(artifact)!r}, {str(tmp_path / "hf")!r}]):
    r = CliRunner().invoke(main, args)
    print(r.exit_code, r.output.strip())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("2 error: this needs torch") for line in lines), lines
    assert all("pip install 'modkit[train]'" in line for line in lines)
    assert not (tmp_path / "out").exists() and not (tmp_path / "hf").exists()


def test_a_merge_that_changes_the_outputs_fails_the_build(tmp_path, monkeypatch):
    from modkit.builder.merge import MergeError
    from modkit_plugins.peft.lora_impl import LoRALinear

    def wrong_axis(self):  # B·A transposed into a square weight: the classic broken merge
        weight = self.base.weight
        weight.data += self.delta_weight().T

    monkeypatch.setattr(LoRALinear, "merge", wrong_axis)
    with pytest.raises(MergeError, match="merging lora changed the model's outputs: max abs difference"):
        quiet_build(tiny_spec(tmp_path, steps=(2, 3)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_two_loras_on_one_layer_build_and_merge(tmp_path):
    spec = tiny_spec(tmp_path, steps=(2, 3))
    spec.write_text(spec.read_text().replace(
        'peft = [{ use = "lora", r = 4, alpha = 8, targets = ["attn.q", "attn.v"] }]',
        'peft = [{ use = "lora", r = 4, alpha = 8, targets = ["attn.q", "attn.v"] }, '
        '{ use = "lora", r = 2, targets = ["attn.*"] }]'))
    m = quiet_build(spec, tmp_path / "out")
    assert m["merge"]["methods"] == ["lora", "lora"] and m["merge"]["max_abs_diff"] < 1e-4
    assert m["stages"][1]["trainable_parameters"] == 2 * 2 * 4 * 64 + 2 * 4 * 2 * 64 + 32 * 5 + 5


@pytest.mark.machine_dependent
def test_cuda_provider_that_cannot_start_is_a_clear_error(artifact, monkeypatch):
    """onnxruntime-gpu without a working CUDA lists the CUDA provider, then silently runs on the
    CPU; modkit refuses instead. Here the listing is faked: this onnxruntime really falls back."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    r = CliRunner().invoke(main, ["run", str(artifact), "--provider", "cuda", "--text", "x"])
    assert r.exit_code == 2 and "could not start its CUDAExecutionProvider" in r.output, r.output


def test_a_resume_with_another_spec_or_data_is_refused_naming_the_change(tmp_path, monkeypatch):
    # interrupted in its first stage, then resumed with another lr, then with other data
    spec, out = tiny_spec(tmp_path, steps=(6, 1)), tmp_path / "out"
    real = build_module.train_stage

    def crashing(model, objective, data, stage_cfg, *, index, on_step, **kw):
        def boom(record):
            on_step(record)
            if record.step == 5:  # after the checkpoint at step 4
                raise Interrupt
        return real(model, objective, data, stage_cfg, index=index, on_step=boom, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(build_module, "train_stage", crashing)
        with pytest.raises(Interrupt):
            quiet_build(spec, out)
    build = ["build", str(spec), "-o", str(out), "--quiet", "--resume"]
    r = CliRunner().invoke(main, [*build, "--set", "stages[0].lr=0.002"])
    assert r.exit_code == 2, r.output
    assert f"error: {spec}: stages[0].lr: 0.0003 -> 0.002" in r.output
    assert "--resume continues a build only with the spec and data it started with" in r.output
    assert "Traceback" not in r.output
    with open(tmp_path / "modules.jsonl", "a") as f:
        f.write('{"text": "one more", "label": "socket"}\n')
    r = CliRunner().invoke(main, build)
    assert r.exit_code == 2 and "stages[1].data: data file modules.jsonl changed since the checkpoint" in r.output
    # what may differ (the artifact's name, where it trains, checkpoint spacing, where its figures
    # are tracked) does not stop a resume
    (tmp_path / "modules.jsonl").write_text((EXAMPLE / "modules.jsonl").read_text(encoding="utf-8"))
    r = CliRunner().invoke(main, [*build, "--set", 'name="renamed"', "--set", "stages[0].checkpoint_every=2",
                                  "--set", 'device="cpu"', "--track", "tensorboard"])
    assert r.exit_code == 0, r.output
