"""Shared fixtures: the text slice in tests/fixtures and the reference assets of tests/assets.py."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent))  # so tests can import assets.py

from ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402,F401 - hooks

#: hand-written texts that tokenizers get wrong first
HARD_CASES = [
    "", " ", "   ", "\t\n", "a  b   c", "\r\n", "line one\r\nline two\r\n", "x\x00y",
    "\x01\x1f\x7f", "tab\there", "e\u0301t\u0301e\u0301", "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "\u4f60\u597d\uff0c\u4e16\u754c",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 family \U0001f44d\U0001f3fd", "\U0001f1eb\U0001f1f7 flag",
    "<|endoftext|> inside text", "[CLS] [SEP] [MASK] as text", "don't you'll we've I'm",
    "x" * 300, "supercalifragilisticexpialidocious" * 5, "3.14159 1,000,000 0x1F",
    "  leading and trailing  ", "\u00a0non-breaking\u2003spaces\u3000", "MiXeD CaSe ÄÖÜ ß",
    "\ufeffbyte order mark", "a\u0300\u0301\u0302\u0303", "\U00010348 gothic", "\ud7ff\ue000\uffff",
]


def fixture_text() -> str:
    return (FIXTURES / "pydoc-slice.txt").read_text(encoding="utf-8")


def fixture_paragraphs() -> list[str]:
    return [p for p in fixture_text().split("\n\n") if p.strip()]


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    return FIXTURES / "pydoc-slice.txt"


@pytest.fixture(scope="session")
def paragraphs() -> list[str]:
    return fixture_paragraphs()


def _asset(name: str) -> Path:
    from assets import locate

    path = locate(name)
    if path is None:
        pytest.skip(f"reference asset {name} missing: run `python tests/assets.py fetch`")
    return path


@pytest.fixture(scope="session")
def gpt2_tiktoken_path() -> Path:
    return _asset("gpt2.tiktoken")


@pytest.fixture(scope="session")
def clip_merges_path() -> Path:
    return _asset("bpe_simple_vocab_16e6.txt.gz")


@pytest.fixture(scope="session")
def minilm_vocab_path() -> Path:
    return _asset("minilm/vocab.txt")


@pytest.fixture(scope="session")
def minilm_tokenizer_json_path() -> Path:
    return _asset("minilm/tokenizer.json")


@pytest.fixture(scope="session")
def open_clip_reference(clip_merges_path):
    """open_clip's SimpleTokenizer, imported from its source file in the wheel."""
    import importlib.util

    pytest.importorskip("ftfy", reason="open_clip's tokenizer needs ftfy: run `python tests/assets.py fetch`")
    pytest.importorskip("torch", reason="open_clip's tokenizer module imports torch")
    source = _asset("open_clip_tokenizer.py")
    spec = importlib.util.spec_from_file_location("open_clip_reference_tokenizer", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(bpe_path=str(clip_merges_path))


# In CI every skip fails, parity tests' included, unless marked machine_dependent: see ci_skips.py.


def import_or_skip(module: str, install: str):
    """Import ``module`` or skip the test, except in CI (``CI=true``), where a skip would hide
    that the test command failed to install it: there it fails."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed: {install}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


# Token files (modkit.tokenfile) go to a throwaway cache, not the user's ~/.cache.
import os as _os
import tempfile as _tempfile

_os.environ.setdefault("MODKIT_CACHE", _tempfile.mkdtemp(prefix="modkit-test-cache-"))


@pytest.fixture(scope="session")
def spm_models(tmp_path_factory):
    """SentencePiece models trained here by the ``sentencepiece`` package, one per option set
    of tests/plugins/spm_models.py (name -> .model path)."""
    import_or_skip("sentencepiece", "pip install sentencepiece (the dev extra)")
    from spm_models import train_models

    return train_models(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="session")
def google_spm_models() -> dict[str, Path]:
    """sentencepiece's own test models (an English Unigram and BPE of 1,000 pieces, a Japanese
    Unigram of 8,000) and botchan.txt, the text they were trained on, from its sdist."""
    names = ("botchan_en_unigram_1000.model", "kyoto_ja_unigram_8000.model", "botchan_en_bpe_1000.model",
             "botchan.txt")
    return {name: _asset(f"spm/{name}") for name in names}
