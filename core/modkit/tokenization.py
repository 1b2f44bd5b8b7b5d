"""Finding the tokenizer component that reads a given file (torch-free)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ArtifactError
from .interfaces import Tokenizer


def load_tokenizer(path, *, registry=None) -> Tokenizer:
    """Load a tokenizer from an artifact folder, a tokenizer.json (modkit or Hugging Face),
    a BERT vocab.txt, a ``*.tiktoken`` ranks file, or a folder with vocab.json + merges.txt.

    Every registered tokenizer is asked in turn whether it reads the file; the component an
    artifact's manifest names is asked first.
    """
    from .registry import get_registry

    registry = registry or get_registry()
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder")
    preferred = None
    if path.is_dir() and (path / "tokenizer.json").exists():
        manifest = path / "manifest.json"
        if manifest.exists():
            try:
                preferred = json.loads(manifest.read_text())["components"]["tokenizer"]["name"]
            except (ValueError, KeyError, TypeError):
                raise ArtifactError(f"{manifest}: not a modkit manifest") from None
        path = path / "tokenizer.json"
    names = registry.names("tokenizer")
    if preferred in names:
        names.remove(preferred)
        names.insert(0, preferred)
    for name in names:
        tokenizer = registry.get("tokenizer", name).load().from_file(path)
        if tokenizer is not None:
            return tokenizer
    raise ArtifactError(
        f"{path}: not a tokenizer modkit can read (tried {', '.join(names) or 'no tokenizers'}); "
        "expected a tokenizer.json, a BERT vocab.txt, a *.tiktoken file, or a folder with "
        "vocab.json and merges.txt"
    )
