"""Files the ``sentencepiece`` tokenizer reads and writes: sentencepiece's ``.model`` and
Hugging Face's tokenizer.json (a ``Unigram`` model, or ``BPE`` with ``byte_fallback``)."""
from __future__ import annotations

from pathlib import Path

from .spm_proto import read_model

_MAGIC_PIECE = b"\n"  # a ModelProto starts with field 1 (pieces), length-delimited


def load_sentencepiece(cls, path: Path):
    """A SentencePieceTokenizer from ``path``, or None when it is in no format read here."""
    if path.is_dir():
        for name in ("spiece.model", "tokenizer.model", "sentencepiece.bpe.model"):
            if (path / name).is_file():
                return load_sentencepiece(cls, path / name)
        return None
    if path.suffix == ".model" and path.is_file():
        return cls(read_model(path), where=str(path))
    return None
