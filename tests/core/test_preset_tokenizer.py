"""A backbone preset may bring its tokenizer (``tokenizer = NAME`` in registry.toml): the t5-*
presets bring t5-spiece to a spec whose [tokenizer] names none; an explicit `use` or `from` wins."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from modkit import SpecError
from modkit.builder.training.fingerprint import fingerprint
from modkit.cli import main
from modkit.errors import UserError
from modkit.registry import load_registry
from modkit.spec import load_spec

SPEC = '''
name = "t"
{tokenizer}
[backbone]
use = "{backbone}"
vocab_size = 0
d_model = 32
d_kv = 8
d_ff = 64
encoder_layers = 1
decoder_layers = 1
n_heads = 4
[[stages]]
objective = {{ use = "span-corruption" }}
data = "c.txt"
steps = 1
'''
TRAINED = '[tokenizer]\nvocab_size = 420\nextra_ids = 20\ntrain_on = "c.txt"'


def write(tmp_path, tokenizer: str = TRAINED, backbone: str = "t5-small"):
    (tmp_path / "c.txt").write_text("hello world\n")
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(tokenizer=tokenizer, backbone=backbone))
    return path


@pytest.mark.parametrize("backbone", ["t5-small", "t5-base", "t5-v1_1-small"])
def test_t5_presets_bring_t5s_tokenizer_with_the_sections_options_over_its(tmp_path, backbone):
    spec = load_spec(write(tmp_path, backbone=backbone))
    assert spec.tokenizer.component.name == "sentencepiece"
    options = spec.tokenizer.options
    assert (options.model_type, options.special_ids, options.append_eos) == ("unigram", {"pad": 0, "eos": 1, "unk": 2},
                                                                            True)  # the preset's
    assert (options.vocab_size, options.extra_ids) == (420, 20)  # the spec's own keys beat it
    resolved = spec.resolved_dict()["tokenizer"]  # what the manifest and the resume fingerprint record
    assert resolved["use"] == "t5-spiece" and resolved["vocab_size"] == 420


def test_the_fingerprint_sees_the_brought_tokenizer_as_if_named(tmp_path):
    brought = fingerprint(load_spec(write(tmp_path)))
    named = fingerprint(load_spec(write(tmp_path, TRAINED.replace("]\n", ']\nuse = "t5-spiece"\n', 1))))
    assert brought == named and brought["spec"]["tokenizer"]["use"] == "t5-spiece"
    other = fingerprint(load_spec(write(tmp_path), ['tokenizer.use="sentencepiece"']))
    assert other["spec"]["tokenizer"] != brought["spec"]["tokenizer"]  # a resume would name the change


@pytest.mark.parametrize("tokenizer, name", [
    (TRAINED.replace("]\n", ']\nuse = "sentencepiece"\n', 1), "sentencepiece"),  # an explicit use wins
    ('[tokenizer]\nuse = "bpe"\nvocab_size = 300\ntrain_on = "c.txt"', "bpe"),
])
def test_an_explicit_tokenizer_wins(tmp_path, tokenizer, name):
    spec = load_spec(write(tmp_path, tokenizer))
    assert spec.tokenizer.component.name == name
    assert spec.resolved_dict()["tokenizer"]["use"] == name


def test_a_loaded_tokenizer_wins(tmp_path):
    (tmp_path / "tok.json").write_text("{}")
    spec = load_spec(write(tmp_path, '[tokenizer]\nfrom = "tok.json"'))
    assert spec.tokenizer is None and spec.model.tokenizer.from_ == "tok.json"


def test_presets_without_a_tokenizer_bring_none(tmp_path):
    spec = load_spec(write(tmp_path, '[tokenizer]\nvocab_size = 300\ntrain_on = "c.txt"', backbone="t5"))
    assert spec.tokenizer.component.name == "bpe"  # the spec's default, as before


def test_a_brought_tokenizer_without_text_says_where_it_came_from(tmp_path):
    with pytest.raises(SpecError, match=r"tokenizer: expected 'train_on' .* \(the tokenizer 't5-spiece' that "
                                        r"backbone preset 't5-small' brings trains on them\)"):
        load_spec(write(tmp_path, ""))


def test_a_preset_bringing_an_unknown_tokenizer_is_a_spec_error_naming_it(tmp_path):
    registry = tmp_path / "registry.toml"
    registry.write_text('[presets.my-t5]\nkind = "backbone"\nuse = "t5"\ntokenizer = "t5-spiec"\n')
    r = CliRunner().invoke(main, ["--registry", str(registry), "build", str(write(tmp_path, backbone="my-t5")),
                                  "-o", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert (f"backbone.use: backbone preset 'my-t5' brings its tokenizer, presets.my-t5.tokenizer = 't5-spiec' in "
            f"{registry}: unknown tokenizer 't5-spiec'; did you mean 't5-spiece'?") in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_a_preset_bringing_a_preset_of_another_kind_is_a_spec_error(tmp_path):
    registry = tmp_path / "registry.toml"
    registry.write_text('[presets.my-t5]\nkind = "backbone"\nuse = "t5"\ntokenizer = "t5-small"\n')
    with pytest.raises(SpecError, match="presets.my-t5.tokenizer = 't5-small' .*'t5-small' is a backbone preset, "
                                        "not a tokenizer"):
        load_spec(write(tmp_path, backbone="my-t5"), registry=load_registry(registry))


def test_a_tokenizer_key_that_is_no_name_is_a_registry_error(tmp_path):
    registry = tmp_path / "registry.toml"
    registry.write_text('[presets.my-t5]\nkind = "backbone"\nuse = "t5"\ntokenizer = 3\n')
    with pytest.raises(UserError, match=r"presets.my-t5.tokenizer: expected the name of a tokenizer preset or "
                                        r"component \(got 3\)"):
        load_registry(registry)


def test_modkit_list_and_info_show_the_tokenizer_a_preset_brings():
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["list", "--json", "--kind", "backbone"]).output)
    brings = {p["name"]: p.get("tokenizer") for p in listed["presets"]}
    assert brings["t5-small"] == brings["t5-base"] == brings["t5-v1_1-small"] == "t5-spiece"
    assert brings["gpt2"] is None and brings["bert-base"] is None  # no tokenizer preset of theirs exists
    text = runner.invoke(main, ["list", "--kind", "backbone"]).output
    assert "t5-small" in text and "Brings the tokenizer t5-spiece." in text
    info = runner.invoke(main, ["info", "t5-small"]).output
    assert "preset t5-small brings the tokenizer 't5-spiece'" in info
