"""The registry: lazy listing, broken plugins isolated, name clashes, the user's overlay."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modkit import DuplicateComponentError, UnknownComponentError, load_registry
from modkit.registry import REGISTRY_ENV

PLUGIN = textwrap.dedent('''
    import modkit

    class HelloOptions(modkit.Options):
        greeting: str = "hi"

    @modkit.hookimpl
    def modkit_register_tokenizers(register):
        register("{name}", "nowhere:Nothing", options=HelloOptions, doc="A test tokenizer.")
''')


def write_plugin(folder: Path, filename: str, name: str = "hello", body: str | None = None) -> str:
    (folder / filename).write_text(body if body is not None else PLUGIN.format(name=name))
    return filename


def user_registry(folder: Path, plugins: list[str], extra: str = "") -> Path:
    path = folder / "registry.toml"
    path.write_text(f"plugins = {json.dumps(plugins)}\n{extra}")
    return path


def test_builtins_come_through_entry_points():
    reg = load_registry(use_entry_points=True)
    assert {"bpe", "gpt", "clm", "classify", "lora"} <= {name for _, name in reg.components}
    assert reg.get("backbone", "gpt").plugin == "gpt"
    assert not reg.failures, reg.failures


def test_listing_does_not_import_torch():
    code = ("import sys, modkit.cli\n"
            "from click.testing import CliRunner\n"
            "r = CliRunner().invoke(modkit.cli.main, ['list'])\n"
            "assert r.exit_code == 0, r.output\n"
            "assert 'gpt' in r.output\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_local_plugin_from_user_registry(tmp_path):
    reg = load_registry(user_registry(tmp_path, [write_plugin(tmp_path, "hello.py")]), use_entry_points=False)
    comp = reg.get("tokenizer", "hello")
    assert comp.plugin == "hello.py" and comp.doc == "A test tokenizer."
    assert comp.options().greeting == "hi"


def test_broken_plugin_is_reported_and_others_work(tmp_path):
    broken = write_plugin(tmp_path, "broken.py", body="raise RuntimeError('boom at import')\n")
    reg = load_registry(user_registry(tmp_path, [broken, write_plugin(tmp_path, "hello.py")]))
    assert [(f.plugin, f.error) for f in reg.failures] == [("broken.py", "RuntimeError: boom at import")]
    assert reg.get("tokenizer", "hello")
    assert reg.get("backbone", "gpt")


def test_plugin_whose_hook_raises_registers_nothing(tmp_path):
    body = PLUGIN.format(name="half") + "\n@modkit.hookimpl\ndef modkit_register_backbones(register):\n    raise ValueError('bad')\n"
    reg = load_registry(user_registry(tmp_path, [write_plugin(tmp_path, "half.py", body=body)]), use_entry_points=False)
    assert ("tokenizer", "half") not in reg.components
    assert reg.failures[0].error == "ValueError: bad"


FORMAT = textwrap.dedent('''
    @modkit.hookimpl
    def modkit_register_checkpoint_formats(register):
        register("toy", "{module}:ToyFormat")
''')
RAISES = "\n@modkit.hookimpl\ndef modkit_register_peft_methods(register):\n    raise ValueError('bad')\n"


def test_a_plugin_failing_half_way_leaves_the_others_untouched(tmp_path):
    # the broken plugin registers a clashing tokenizer and format, then fails: no trace of it stays
    good = write_plugin(tmp_path, "good.py", body=PLUGIN.format(name="hello") + FORMAT.format(module="good"))
    broken = write_plugin(tmp_path, "broken.py",
                          body=PLUGIN.format(name="hello") + FORMAT.format(module="broken") + RAISES)
    for order in ([good, broken], [broken, good]):
        reg = load_registry(user_registry(tmp_path, order), use_entry_points=False)
        assert reg.get("tokenizer", "hello").plugin == "good.py"
        assert not reg.conflicts and not reg.format_conflicts
        assert reg.checkpoint_format("toy") == ("good.py", "good:ToyFormat")
        assert [f.plugin for f in reg.failures] == ["broken.py"] and "broken.py" not in reg.plugins


def test_two_plugins_with_one_checkpoint_format_clash_unless_preferred(tmp_path):
    a = write_plugin(tmp_path, "one.py", body="import modkit\n" + FORMAT.format(module="one"))
    b = write_plugin(tmp_path, "two.py", body="import modkit\n" + FORMAT.format(module="two"))
    reg = load_registry(user_registry(tmp_path, [a, b]), use_entry_points=False)
    with pytest.raises(DuplicateComponentError) as err:
        reg.checkpoint_format("toy")
    assert "checkpoint_format 'toy' is registered by both 'one.py' and 'two.py'" in str(err.value)
    from click.testing import CliRunner

    from modkit.cli import main

    r = CliRunner().invoke(main, ["--registry", str(tmp_path / "registry.toml"), "list"])
    assert "conflict   checkpoint_format.toy: registered by one.py, two.py" in r.output, r.output
    path = user_registry(tmp_path, [a, b], '[prefer]\n"checkpoint_format.toy" = "two.py"\n')
    assert load_registry(path, use_entry_points=False).checkpoint_format("toy") == ("two.py", "two:ToyFormat")


def test_name_clash_names_both_plugins(tmp_path):
    a, b = write_plugin(tmp_path, "one.py"), write_plugin(tmp_path, "two.py")
    reg = load_registry(user_registry(tmp_path, [a, b]), use_entry_points=False)
    with pytest.raises(DuplicateComponentError) as err:
        reg.get("tokenizer", "hello")
    assert "'one.py' and 'two.py'" in str(err.value)


def test_user_registry_chooses_between_clashing_plugins(tmp_path):
    a, b = write_plugin(tmp_path, "one.py"), write_plugin(tmp_path, "two.py")
    path = user_registry(tmp_path, [a, b], '[prefer]\n"tokenizer.hello" = "two.py"\n')
    assert load_registry(path, use_entry_points=False).get("tokenizer", "hello").plugin == "two.py"


def test_user_presets_add_to_packaged_ones(tmp_path):
    path = user_registry(tmp_path, [], '[presets.my-gpt]\nkind = "backbone"\nuse = "gpt"\nd_model = 64\n')
    reg = load_registry(path)
    comp, values = reg.resolve("backbone", "my-gpt")
    assert comp.name == "gpt" and values == {"d_model": 64}
    assert "gpt-tiny" in reg.presets  # the packaged ones are still there


def test_unknown_name_lists_close_matches():
    reg = load_registry()
    with pytest.raises(UnknownComponentError) as err:
        reg.get("objective", "clasify")
    assert str(err.value).startswith("unknown objective 'clasify'; did you mean 'classify'")  # closest first


def test_invalid_component_name_is_a_plugin_failure(tmp_path):
    reg = load_registry(user_registry(tmp_path, [write_plugin(tmp_path, "bad.py", name="Bad Name")]),
                        use_entry_points=False)
    assert "must match" in reg.failures[0].error


def test_third_party_example_plugin_is_listed_and_usable(tmp_path):
    pytest.importorskip("modkit_hello", reason="pip install -e examples/plugin-hello")
    from click.testing import CliRunner

    from modkit.cli import main
    from modkit.spec import load_spec

    r = CliRunner().invoke(main, ["list", "--kind", "tokenizer"])
    assert r.exit_code == 0 and any(line.split()[:3] == ["tokenizer", "words", "hello"] for line in r.output.splitlines())
    (tmp_path / "c.txt").write_text("hello world\n")
    (tmp_path / "spec.toml").write_text('name = "w"\n[tokenizer]\nuse = "words"\nvocab_size = 50\ntrain_on = ["c.txt"]\n'
                                        '[[stages]]\nobjective = { use = "clm" }\ndata = "c.txt"\nsteps = 1\n')
    spec = load_spec(tmp_path / "spec.toml", registry=load_registry())
    assert spec.tokenizer.component.plugin == "hello" and spec.tokenizer.options.vocab_size == 50


def test_registry_toml_in_the_working_directory_never_runs_its_plugins(tmp_path):
    marker = tmp_path / "ran"
    write_plugin(tmp_path, "evil.py", body=f"open({str(marker)!r}, 'w').close()\n" + PLUGIN.format(name="evil"))
    user_registry(tmp_path, ["evil.py"])
    code = "from modkit.cli import main; main(['list', '--kind', 'tokenizer'])"
    env = {k: v for k, v in os.environ.items() if k != REGISTRY_ENV}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "evil" not in out.stdout and not marker.exists()
    # named by the environment variable (or --registry), the same file is used
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, REGISTRY_ENV: "registry.toml"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "evil" in out.stdout and marker.exists()
