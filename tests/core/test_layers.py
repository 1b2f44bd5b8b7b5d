"""The architecture's import rules (pyproject's [tool.importlinter] contracts), run by import-linter."""
from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def _lint(config: Path) -> int:
    return lint_imports(config_filename=str(config), no_cache=True)


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert _lint(ROOT / "pyproject.toml") == 0, "an import contract is broken: run `lint-imports` for the chain"


@pytest.mark.parametrize("body, broken", [("def serve():\n    import heavy\n", True),
                                          ("def serve():\n    import json\n", False)])
def test_an_import_inside_a_function_counts(tmp_path, monkeypatch, body, broken):
    """The contract sees imports inside functions, not only at the top of a module (the
    passing variant shows the broken one fails for the import, not for a bad config)."""
    # a package of its own name: grimp would find the installed modkit before one named modkit here
    for name, text in {"fakekit/__init__.py": "", "fakekit/runtime/__init__.py": body, "heavy/__init__.py": ""}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pyproject.toml").write_text('''
[tool.importlinter]
root_packages = ["fakekit"]
include_external_packages = true
[[tool.importlinter.contracts]]
name = "serving without heavy"
type = "forbidden"
source_modules = ["fakekit.runtime"]
forbidden_modules = ["heavy"]
''')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _lint(tmp_path / "pyproject.toml") == (1 if broken else 0)


@pytest.mark.parametrize("old, new", [("checkpoints", "hf.convert"), ("weight_table", "hf.weight_table"),
                                      ("peft_folders", "hf.peft_folders"), ("exporter", "export.exporter"),
                                      ("export_seq2seq", "export.seq2seq")])
def test_the_flat_builder_paths_plugins_used_still_import_the_same_objects(old, new):
    """Plugins written before the builder was grouped import these paths; each name they offer
    is the grouped module's own object, not a copy."""
    import importlib

    shim, module = importlib.import_module(f"modkit.builder.{old}"), importlib.import_module(f"modkit.builder.{new}")
    offered = [name for name in vars(shim) if not name.startswith("_")]
    assert offered
    for name in offered:
        assert getattr(shim, name) is getattr(module, name), name
