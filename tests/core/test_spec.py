"""Spec errors: exit 2, the file and key path in one message per problem, no traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from modkit import SpecError, UserError
from modkit.cli import main
from modkit.spec import load_spec, parse_override

GOOD = '''
name = "t"
[tokenizer]
use = "bpe"
vocab_size = 300
train_on = ["corpus.txt"]
[backbone]
use = "gpt"
d_model = 32
[[stages]]
objective = { use = "clm" }
data = "corpus.txt"
steps = 5
[[stages]]
objective = { use = "classify", labels = ["a", "b"] }
peft = [{ use = "lora", r = 4 }]
data = "corpus.txt"
steps = 5
'''


@pytest.fixture
def spec_file(tmp_path):
    (tmp_path / "corpus.txt").write_text("hello world\n")
    path = tmp_path / "spec.toml"
    path.write_text(GOOD)
    return path


def build_errors(spec_file, *sets):
    return CliRunner().invoke(main, ["build", str(spec_file), "-o", str(spec_file.parent / "out"),
                                     *[a for s in sets for a in ("--set", s)]])


def test_valid_spec_resolves_components_and_presets(spec_file):
    spec = load_spec(spec_file, ["backbone.use=gpt-tiny", "backbone.n_layers=1"])
    assert spec.backbone.component.name == "gpt"
    assert (spec.backbone.options.d_model, spec.backbone.options.n_layers) == (32, 1)  # the spec beats the preset
    assert spec.peft[1][0].options.r == 4
    assert spec.resolved_dict()["stages"][1]["peft"][0]["alpha"] == 16.0


@pytest.mark.parametrize("override, key, words", [
    ("stages[1].peft[0].r=0", "stages[1].peft[0].r", "greater than 0"),
    ("stages[1].peft[0].r='x'", "stages[1].peft[0].r", "valid integer"),
    # strict types: TOML has them, so a number written as a string is a mistake, not a number
    ("stages[1].peft[0].r='8'", "stages[1].peft[0].r",
     "Input should be a valid integer (got '8', a string: write it without quotes)"),
    ("backbone.d_model='128'", "backbone.d_model", "valid integer (got '128', a string"),
    ("stages[0].steps='5'", "stages[0].steps", "valid integer (got '5', a string"),
    ("stages[0].lr='1e-3'", "stages[0].lr", "valid number (got '1e-3', a string"),
    ("export.onnx='true'", "export.onnx", "valid boolean (got 'true', a string"),
    ("stages[0].steps=5.0", "stages[0].steps", "valid integer (got 5.0)"),
    ("stages[1].peft[0].rank=4", "stages[1].peft[0].rank",
     "lora takes no option 'rank'; it takes: r, alpha, targets, dropout"),
    ("stages[1].peft[0].rr=4", "stages[1].peft[0].rr", "lora takes no option 'rr' (did you mean 'r'?); it takes: r,"),
    ("stages[0].steps=-1", "stages[0].steps", "greater than or equal to 0"),
    ("stages[0].stepz=3", "stages[0].stepz", "a stage takes no key 'stepz' (did you mean 'steps'?); it takes: "
     "objective, peft, data, steps, recipe, optimizer, schedule, lr, batch_size, seq_len, weight_decay, "
     "warmup_steps, max_grad_norm, checkpoint_every, accumulate, eval_every, eval_data, eval_examples, "
     "keep_checkpoints"),
    ("export.onx=true", "export.onx", "[export] takes no key 'onx' (did you mean 'onnx'?); it takes: merge, onnx, "
     "opset, parity_tolerance, optimize, quantize"),
    ("nmae='x'", "nmae", "the spec takes no key 'nmae' (did you mean 'name'?); it takes: name, seed, device, "
     "precision, compile, strategy, cpu_offload, tokenizer, backbone, stages, export"),
    ("backbone.use=gtp", "backbone.use", "did you mean 'gpt', 'gpt2'?"),
    ("stages[0].objective.use=clmm", "stages[0].objective.use", "did you mean 'clm'"),
    ("stages[0].data='missing.txt'", "stages[0].data", "no such file or folder: 'missing.txt'"),
    ("backbone.variant='gpt3'", "backbone.variant", "'gpt1' or 'gpt2'"),
    ("stages[1].objective.labels=['a']", "stages[1].objective.labels", "at least 2 items"),
    ("export.quantize='bf16'", "export.quantize", "'bf16' is not one of 'none', 'int8', 'fp16'"),
    ("export.quantize=['int8','none']", "export.quantize", "'none' is not one of"),
    # a check across options (a model validator) names the table, without pydantic's prefix
    ("stages[1].objective.format='choice'", "stages[1].objective", "takes no labels"),
])
def test_each_mistake_names_file_and_key(spec_file, override, key, words):
    result = build_errors(spec_file, override)
    assert result.exit_code == 2
    first = result.output.strip().splitlines()[0]
    assert first.startswith(f"error: {spec_file}: {key}: "), result.output
    assert words in first
    assert "Traceback" not in result.output and "Value error" not in first


def test_strict_types_still_take_an_integer_where_a_number_is_expected(spec_file):
    spec = load_spec(spec_file, ["stages[0].lr=1", "stages[1].peft[0].alpha=32", "stages[1].peft[0].targets=['attn.q']"])
    assert spec.model.stages[0].lr == 1.0 and isinstance(spec.model.stages[0].lr, float)
    assert spec.peft[1][0].options.alpha == 32.0 and list(spec.peft[1][0].options.targets) == ["attn.q"]
    # a TOML array is a tuple where an option is one
    spec = load_spec(spec_file, ["stages[0].optimizer={use='adamw', betas=[0.9, 0.95]}"])
    assert spec.optimizers[0].options.betas == (0.9, 0.95)


def test_every_problem_is_reported_at_once(spec_file):
    with pytest.raises(SpecError) as err:
        load_spec(spec_file, ["stages[0].steps=-1", "backbone.use=gtp", "stages[1].peft[0].r=0"])
    assert [loc for loc, _ in err.value.problems] == ["stages[0].steps", "backbone.use", "stages[1].peft[0].r"]


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    r = CliRunner().invoke(main, ["build", str(bad), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and f"{bad}: not valid TOML" in r.output
    r = CliRunner().invoke(main, ["build", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such spec file" in r.output


@pytest.mark.parametrize("text", ["noequals", "=3", "a..b=1"])
def test_bad_override(text):
    with pytest.raises(UserError):
        parse_override(text)


def test_override_of_missing_list_item(spec_file):
    result = build_errors(spec_file, "stages[5].steps=1")
    assert result.exit_code == 2 and "stages[5]" in result.output


def test_exit_code_2_without_traceback_in_a_real_process(spec_file):
    proc = subprocess.run([sys.executable, "-m", "modkit", "build", str(spec_file), "-o", "x",
                           "--set", "backbone.use=nope"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "backbone.use: unknown backbone 'nope'" in proc.stderr


@pytest.mark.parametrize("sets, words", [
    ([], "options ['train_on', 'vocab_size'] cannot be combined with 'from'"),
    (["tokenizer.vocab_sise=10"], "options ['train_on', 'vocab_sise', 'vocab_size'] cannot be combined"),
])
def test_options_next_to_tokenizer_from_are_rejected(spec_file, sets, words):
    (spec_file.parent / "tok.json").write_text("{}")
    spec_file.write_text(GOOD.replace('train_on = ["corpus.txt"]', 'train_on = ["corpus.txt"]\nfrom = "tok.json"'))
    result = build_errors(spec_file, *sets)
    assert result.exit_code == 2, result.output
    assert f"error: {spec_file}: tokenizer: {words}" in result.output
    # only `from` (and `use`) may stand beside it
    spec_file.write_text(GOOD.replace('use = "bpe"\nvocab_size = 300\ntrain_on = ["corpus.txt"]', 'from = "tok.json"'))
    assert load_spec(spec_file).model.tokenizer.from_ == "tok.json"



@pytest.mark.parametrize("sets, message", [
    (["backbone.use=bert"], "spec.toml: stages[0].objective ('clm'): clm needs a decoder-only backbone that caches "
                            "its keys and values (gpt, say); BERT is not one (use seq2seq for encoder-decoders)"),
    (["stages[1].objective={use='seq2seq'}"], "spec.toml: stages[1].objective ('seq2seq'): seq2seq needs an "
                                              "encoder-decoder backbone (bart or t5, say); GPT is not one"),
    (["stages[1].objective.temprature=0.5"], "spec.toml: stages[1].objective.temprature: classify takes no option "
     "'temprature'; it takes: format, labels, aux_lm_weight, text_field, text_pair_field, choices_field, label_field, "
     "holdout, label_smoothing, dropout, pooling"),
])
def test_messages_name_no_internal_class_and_print_the_spec_path_as_given(spec_file, monkeypatch, sets, message):
    monkeypatch.chdir(spec_file.parent)
    result = CliRunner().invoke(main, ["build", "spec.toml", "-o", "out", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 2
    assert result.output == f"error: {message}\n"
