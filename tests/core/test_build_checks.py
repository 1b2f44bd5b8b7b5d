"""Checks before work and clean failures: what needs only the spec, its files and the
backbone's shape fails before any training and leaves no work folder; a later failure or
Ctrl-C says whether and how to resume; an existing artifact is kept unless --overwrite."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from test_build import quiet_build, tiny_spec

import modkit.builder.build as build_module
from modkit.cli import main
from modkit.errors import UserError
from modkit.fileio import sha256_file


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a stage trained before the spec's problems were found")

    monkeypatch.setattr(build_module, "train_stage", refuse)


def build_cli(spec, out, *args):
    return CliRunner().invoke(main, ["build", str(spec), "-o", str(out), "--quiet", *args])


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('targets = ["attn.q", "attn.v"]', 'targets = ["attn.qq"]'),
     "stages[1].peft[0].targets[0]: 'attn.qq' matches no role of the backbone; roles here: attn.k, attn.o"),
    # one typo among entries that match is found too
    (lambda s: s.replace('targets = ["attn.q", "attn.v"]', 'targets = ["attn.qq", "attn.v"]'),
     "stages[1].peft[0].targets[0]: 'attn.qq' matches no role of the backbone; roles here: attn.k, attn.o, "
     "attn.q, attn.v, ffn.down, ffn.up"),
    (lambda s: s.replace('data = "modules.jsonl"', 'data = "empty.jsonl"'),
     "stages[1].data: {folder}/empty.jsonl: no records"),
    (lambda s: s.replace('data = "modules.jsonl"', 'data = "broken.jsonl"'),
     "stages[1].data: {folder}/broken.jsonl:2: not valid JSON"),
    (lambda s: s.replace('use = "gpt"', 'use = "bert"'),
     "stages[0].objective ('clm'): clm needs a decoder-only backbone"),
])
def test_problems_of_a_later_stage_are_found_before_any_training(tmp_path, no_training, edit, message):
    spec = tiny_spec(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "socket"}\n{"text": \n')
    spec.write_text(edit(spec.read_text()))
    r = build_cli(spec, tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert f"error: {spec}: " + message.format(folder=tmp_path) in r.output
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()  # no work folder, no artifact


def test_a_failed_build_says_how_to_resume_and_ctrl_c_exits_130(tmp_path, monkeypatch):
    spec, out = tiny_spec(tmp_path), tmp_path / "out"
    real = build_module.train_stage

    def interrupted(model, objective, data, stage_cfg, *, index, on_step, **kw):
        def tick(record):
            on_step(record)
            if index == 1 and record.step == 4:  # after the stage's checkpoint at step 3
                raise KeyboardInterrupt
        return real(model, objective, data, stage_cfg, index=index, on_step=tick, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(build_module, "train_stage", interrupted)
        r = build_cli(spec, out, "--set", "seed=3")
    assert r.exit_code == 130, r.output
    work = tmp_path / ".out.work"
    assert (f"the build's work folder {work} holds a checkpoint (1 stage(s) finished, the next one at step 3); "
            f"continue from it with: modkit build {spec} -o {out} --set 'seed=3' --resume") in r.output
    assert r.output.rstrip().endswith("interrupted") and not out.exists()
    r = build_cli(spec, out, "--set", "seed=3", "--resume")
    assert r.exit_code == 0, r.output
    assert "resuming stage 2/2 from step 3\n" in r.output
    assert leftovers(tmp_path) == []


def test_a_failure_before_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(build_module, "train_stage", broken)
    r = build_cli(tiny_spec(tmp_path), tmp_path / "out")
    assert r.exit_code == 1 and "the build stopped before its first checkpoint: nothing to resume" in r.output
    assert leftovers(tmp_path) == []


def test_an_existing_artifact_is_replaced_only_with_overwrite(tmp_path):
    spec, out = tiny_spec(tmp_path, steps=(2, 1)), tmp_path / "out"
    quiet_build(spec, out)
    before = sha256_file(out / "model.safetensors")
    r = build_cli(spec, out, "--set", "seed=4")
    assert r.exit_code == 2 and f"error: {out} already exists; pass --overwrite" in r.output
    assert sha256_file(out / "model.safetensors") == before
    r = build_cli(spec, out, "--set", "seed=4", "--overwrite")
    assert r.exit_code == 0, r.output
    assert sha256_file(out / "model.safetensors") != before


def test_a_plugin_that_cannot_run_on_the_meta_device_is_checked_when_its_stage_starts(tmp_path, monkeypatch):
    from modkit_plugins.objectives.classify_impl import Classify

    real = Classify.__init__

    def reads_values(self, options, backbone, tokenizer):
        float(next(backbone.parameters()).detach().sum())  # fine on real weights, impossible on meta ones
        real(self, options, backbone, tokenizer)

    monkeypatch.setattr(Classify, "__init__", reads_values)
    m = quiet_build(tiny_spec(tmp_path, steps=(2, 1)), tmp_path / "out")
    assert m["task"]["task"] == "classify"


def test_a_method_that_cannot_merge_is_a_spec_error_before_training_unless_the_export_keeps_it(
        tmp_path, monkeypatch):
    # a third-party method may find, when merging, a layer it cannot fold into (IA3's scale over
    # another method's wrapper): the meta-device rehearsal reports it under the method's key
    from modkit_plugins.peft.lora_impl import LoRA

    def refuses(self, backbone):
        raise UserError("lora: cannot merge here")

    monkeypatch.setattr(LoRA, "merge", refuses)
    spec = tiny_spec(tmp_path, steps=(2, 1))
    monkeypatch.setattr(build_module, "train_stage", lambda *a, **k: pytest.fail("trained before the check"))
    r = build_cli(spec, tmp_path / "out")
    assert r.exit_code == 2 and f"error: {spec}: stages[1].peft[0]: lora: cannot merge here" in r.output, r.output
    monkeypatch.undo()
    monkeypatch.setattr(LoRA, "merge", refuses)
    spec.write_text(spec.read_text() + "[export]\nmerge = false\n")  # the last stage's methods stay unmerged
    m = quiet_build(spec, tmp_path / "out")
    assert m["components"]["stages"][1]["peft"][0]["kept"] is True


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('use = "gpt"', 'use = "bert"'),
     "stages[0].objective ('clm'): clm needs a decoder-only backbone"),
    (lambda s: re.sub(r'objective = \{ use = "classify".*', 'objective = { use = "seq2seq" }', s),
     "stages[1].objective ('seq2seq'): seq2seq needs an encoder-decoder backbone"),
    (lambda s: s.replace('targets = ["attn.q", "attn.v"]', 'targets = ["attn.qq", "attn.v"]'),
     "stages[1].peft[0].targets[0]: 'attn.qq' matches no role of the backbone"),
])
def test_what_needs_only_the_spec_is_checked_before_the_tokenizer_trains(tmp_path, monkeypatch, edit, message):
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    def refuse(cls, *args, **kwargs):
        raise AssertionError("the tokenizer trained before the spec's shape was checked")

    monkeypatch.setattr(BPETokenizer, "train", classmethod(refuse))
    spec = tiny_spec(tmp_path)
    spec.write_text(edit(spec.read_text()))
    r = build_cli(spec, tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert f"error: {spec}: {message}" in r.output and "training tokenizer" not in r.output
    assert leftovers(tmp_path) == []


def test_a_plugin_fault_in_the_meta_rehearsal_surfaces_before_any_training(tmp_path, no_training, monkeypatch):
    # only "a meta tensor has no values" defers a check to the build; a plugin's bug is not swallowed
    from modkit.registry import load_registry

    (tmp_path / "faulty_objective.py").write_text(
        "import modkit\nfrom modkit_plugins.objectives.clm import CLMOptions\n"
        "from modkit_plugins.objectives.clm_impl import CausalLM\n"
        "class Faulty(CausalLM):\n"
        "    def __init__(self, options, backbone, tokenizer):\n"
        "        raise KeyError('a bug in the plugin')\n"
        "@modkit.hookimpl\ndef modkit_register_objectives(register):\n"
        "    register('faulty', 'faulty_objective:Faulty', options=CLMOptions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "registry.toml").write_text('plugins = ["faulty_objective"]\n')
    spec = tiny_spec(tmp_path)
    text = spec.read_text()
    spec.write_text(text + text[text.index("[[stages]]"): text.index("[[stages]]", text.index("[[stages]]") + 1)]
                    .replace('use = "clm"', 'use = "faulty"'))
    with pytest.raises(KeyError, match="a bug in the plugin"):
        quiet_build(spec, tmp_path / "out", registry=load_registry(tmp_path / "registry.toml"))
