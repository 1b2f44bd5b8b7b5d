"""Every shell and Python snippet of README.md, docs/ and the examples' READMEs runs as written.

Fenced blocks marked ``sh`` (or bash, shell, console) and ``python`` are run, in order, one
document per test, in a scratch folder where ``examples``, ``tests`` and ``benchmarks`` point at
the repository's, so later snippets see what earlier ones wrote (``out/`` say). Builds are capped
at a few steps (MODKIT_MAX_STEPS). Not run: installs (``pip install``: .ci/run runs those), the
test suite and its asset fetcher, and benchmarks (minutes of CPU each). Listings that are not meant to run
(signatures, output, layouts) are fenced ``text``; TOML blocks are read by tomllib.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*/README.md")])
SHELL, PYTHON = {"sh", "bash", "shell", "console"}, {"python"}
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)  # a closing fence has no info string
NOT_RUN = re.compile(r"(?:pip install|python -m pytest|pytest|bash \.ci/run|python benchmarks/|python tests/assets\.py)[^&|\n]*")


def blocks(doc: Path) -> list[tuple[str, str, int]]:
    """(language, code, first line) of every fenced block."""
    text = doc.read_text(encoding="utf-8")
    return [(m.group(1).lower(), m.group(2), text[: m.start()].count("\n") + 2) for m in FENCE.finditer(text)]


def runnable(doc: Path) -> bool:
    return any(lang in SHELL | PYTHON for lang, _, _ in blocks(doc))


def scratch(tmp_path: Path) -> Path:
    for name in ("examples", "tests", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if runnable(d)], ids=lambda d: str(d.relative_to(ROOT)))
def test_snippets_run_as_written(doc, tmp_path):
    cwd = scratch(tmp_path)
    env = {**os.environ, "MODKIT_MAX_STEPS": "3", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for lang, code, line in blocks(doc):
        where = f"{doc.relative_to(ROOT)}:{line}"
        if lang in SHELL:
            script = NOT_RUN.sub("true", "\n".join(l[2:] if l.startswith("$ ") else l for l in code.splitlines()))
            cmd = ["bash", "-euo", "pipefail", "-c", script]
        elif lang in PYTHON:
            cmd = [sys.executable, "-c", code]
        else:
            continue
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_toml_snippets_parse(doc):
    for lang, code, line in blocks(doc):
        if lang == "toml":
            try:
                tomllib.loads(code)
            except tomllib.TOMLDecodeError as e:
                pytest.fail(f"{doc.relative_to(ROOT)}:{line}: {e}")


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_code_blocks_close(doc):
    """A fence line with an info string (```text) inside a block does not close it (CommonMark):
    the rest of the page would render as code."""
    inside = None
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            assert inside is None or line.strip() == "```", \
                f"{doc.relative_to(ROOT)}:{n}: {line!r} inside the block opened at line {inside}; close it with a bare ```"
            inside = n if inside is None else None
    assert inside is None, f"{doc.relative_to(ROOT)}:{inside}: block never closed"


def test_every_example_has_a_readme():
    missing = [p.name for p in (ROOT / "examples").iterdir() if p.is_dir() and not (p / "README.md").exists()]
    assert missing == []


WRITES = re.compile(r"(?:\s-o\s+|\s>\s*|export-(?:hf|peft)\s+\S+\s+)([A-Za-z][\w.-]*)")


def test_what_the_readmes_commands_write_in_the_checkout_is_ignored_by_git():
    readmes = [ROOT / "README.md", *(ROOT / "examples").glob("*/README.md")]
    written = sorted({m.group(1) for doc in readmes for lang, code, _ in blocks(doc) if lang in SHELL
                      for m in WRITES.finditer(" " + code)})
    assert {"out", "out-tiny-gpt", "predictions.jsonl", "minilm-topics-hf"} <= set(written)
    written += [".out-tiny-gpt.work", "examples/minilm-lora/minilm"]  # a build's work folder; the README's link
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *written],
                          capture_output=True, text=True)
    assert sorted(proc.stdout.split()) == sorted(written), set(written) - set(proc.stdout.split())


def test_the_quick_start_build_stays_short():
    # about 50 CPU-seconds on the development machine (examples/tiny-gpt/README.md): the tokens
    # its stages train on bound that; the spec once trained on 614,400 (6-28 minutes on a busy
    # 2-core machine)
    spec = tomllib.loads((ROOT / "examples" / "tiny-gpt" / "spec.toml").read_text(encoding="utf-8"))
    assert sum(s["steps"] * s["batch_size"] * s["seq_len"] for s in spec["stages"]) <= 470_000
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "about 50 CPU-seconds" in readme and "AMD EPYC" in readme
