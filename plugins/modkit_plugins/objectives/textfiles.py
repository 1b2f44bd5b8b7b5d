"""The text objectives' corpora as memory-mapped token files (modkit.tokenfile), tokenized once
per corpus and tokenizer and reused by the preflight, the stage and the next build: ids
(span corruption), ids with word-start marks (mlm's whole-word masking), or sentences of
documents (nsp's pairs, denoise's groups of sentences; modkit.segmentfile)."""
from __future__ import annotations

from pathlib import Path

from modkit.segmentfile import SegmentFile, segment_file
from modkit.tokenfile import CHUNK_BYTES, TokenFile, print_progress, token_file

from .masking import word_starts
from .pairs import sentences


def _progress(path):
    """Progress lines for a corpus of more than a few chunks (as clm shows them)."""
    path = Path(path)
    return print_progress(f"tokenizing {path.name}") if path.is_file() and path.stat().st_size > 4 * CHUNK_BYTES else None


def ids_file(tokenizer, path) -> TokenFile:
    return token_file(tokenizer, path, progress=_progress(path))


def word_start_file(tokenizer, path) -> TokenFile:
    """Ids with ``marks`` 1 where a token begins a word (:func:`.masking.word_starts` of each chunk)."""
    return token_file(tokenizer, path, marks=word_starts, progress=_progress(path))


def sentence_file(tokenizer, path) -> SegmentFile:
    """Documents of sentences (:func:`.pairs.documents`' split), each sentence encoded on its own."""
    return segment_file(tokenizer, path, sentences, progress=_progress(path))


class Holdout:
    """``modkit.data.split_holdout`` of ``n`` items by index, without listing them: every k-th
    item (k = 1/fraction, at least 2) is held back, counting from the first."""

    def __init__(self, n: int, fraction: float):
        self.k = max(2, round(1 / fraction)) if fraction > 0 else 0
        self.held = (n + self.k - 1) // self.k if self.k else 0
        self.train = n - self.held

    def index(self, part: str, j):
        """The item index of the ``j``-th (an int or an int64 array) ``"train"`` or ``"held"`` item."""
        if part == "held":
            return j * self.k
        return j if not self.k else (j // (self.k - 1)) * self.k + j % (self.k - 1) + 1

    @property
    def name(self) -> str:
        return f"k{self.k}"
