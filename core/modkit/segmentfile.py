"""Segment files: a corpus of documents, each a run of segments (sentences, say), tokenized
once into a token file (:mod:`modkit.tokenfile`) with the offsets of its segments and
documents beside it, all memory-mapped, so objectives that draw sentence pairs or groups of
whole sentences train on a corpus larger than memory.

Documents are the corpus's blank-line separated paragraphs, or its lines when it has no
blank line between two non-blank ones. The caller's ``split(document) -> [segment, ...]``
(a module-level function: worker processes import it) cuts each document into segments;
each segment is encoded on its own (``tokenizer.encode(segment)``), and documents without a
segment are left out. The corpus is read in chunks cut between documents, so the result is
that of the whole text in memory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from modkit.errors import UserError
from modkit.tokenfile import (TokenFile, after_last_newline, companion, function_tag, ids_dtype, is_whole, load_array,
                              text_chunks, token_file_path, write_encoded)

_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class SegmentFile:
    """``tokens.ids`` holds every segment's ids one after another; segment ``s`` is
    ``ids[segments[s]:segments[s + 1]]`` and document ``d`` is segments ``documents[d]`` to
    ``documents[d + 1] - 1`` (both int64 memory maps, one entry more than they count)."""

    tokens: TokenFile
    segments: np.ndarray
    documents: np.ndarray

    @property
    def n_segments(self) -> int:
        return len(self.segments) - 1

    @property
    def n_documents(self) -> int:
        return len(self.documents) - 1

    def segment(self, s: int) -> np.ndarray:
        return self.tokens.ids[self.segments[s]: self.segments[s + 1]]


def paragraphs(text: str, by_lines: bool) -> list[str]:
    """The documents of ``text``: its lines, or its blank-line separated paragraphs."""
    return text.splitlines() if by_lines else _BLANK_LINES.split(text.strip())


def has_paragraphs(text: str) -> bool:
    """Whether ``text``'s documents are paragraphs (it has a blank line between two non-blank
    ones) rather than lines."""
    return _BLANK_LINES.search(text.strip()) is not None


def _file_has_paragraphs(path: Path) -> bool:
    """:func:`has_paragraphs` of a file, read line by line (it stops at the first such line)."""
    seen_text = blank_after_text = False
    with open(path, "rb") as f:
        for line in f:
            blank = not line.decode("utf-8", errors="replace").strip()
            if not blank and blank_after_text:
                return True
            if blank and seen_text and line.endswith(b"\n"):
                blank_after_text = True
            seen_text = seen_text or not blank
    return False


def _document_chunks(path: Path, by_lines: bool) -> Iterator[str]:
    """The file as text in pieces of about CHUNK_BYTES, each a whole number of documents: cut
    after a newline (lines) or after the first newline of a blank line (paragraphs)."""
    return text_chunks(path, after_last_newline if by_lines else _last_blank_line)


def _last_blank_line(block: bytes) -> int:
    """Where the last whitespace-only line of ``block`` begins (after a newline), or -1."""
    end = len(block)
    while True:
        nl = block.rfind(b"\n", 0, end)
        if nl < 0:
            return -1
        before = block.rfind(b"\n", 0, nl)
        if before < 0:
            return -1
        if not block[before + 1: nl].strip():
            return before + 1
        end = nl


def _encode_documents(tokenizer, text: str, *, split: Callable[[str], list[str]], by_lines: bool):
    """(ids, None, segment lengths, segments per document) of a chunk of whole documents."""
    ids: list[int] = []
    lengths, counts = [], []
    for document in paragraphs(text, by_lines):
        segments = split(document)
        if not segments:
            continue
        for segment in segments:
            piece = tokenizer.encode(segment)
            ids += piece
            lengths.append(len(piece))
        counts.append(len(segments))
    return ids, None, lengths, counts


class _Offsets:
    """Chunks' lengths -> running start offsets (the first chunk also writes the leading 0)."""

    def __init__(self):
        self.ends = {"segments": 0, "documents": 0}
        self.first = True

    def __call__(self, result) -> dict[str, np.ndarray]:
        out = {}
        for name, lengths in (("segments", result[2]), ("documents", result[3])):
            ends = self.ends[name] + np.cumsum(np.asarray(lengths, dtype=np.int64))
            out[name] = np.concatenate([[0], ends]) if self.first else ends
            if len(ends):
                self.ends[name] = int(ends[-1])
        self.first = False
        return out


def segment_file(tokenizer, corpus: str | Path, split: Callable[[str], list[str]], *, folder: Path | None = None,
                 workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> SegmentFile:
    """The segment file of ``corpus`` under ``tokenizer`` and ``split``: made once, then
    reused (cached as token files are, under a name that also holds ``split``'s)."""
    corpus = Path(corpus)
    if not corpus.is_file():
        raise UserError(f"{corpus}: no such data file")
    path = token_file_path(tokenizer, corpus, folder, kind="segments", tag=function_tag(split))
    if not is_whole(path, ("segments", "documents")):
        by_lines = not _file_has_paragraphs(corpus)
        encode = partial(_encode_documents, split=split, by_lines=by_lines)
        write_encoded(tokenizer, corpus, path, _document_chunks(corpus, by_lines), encode, workers, progress,
                      ("segments", "documents"), _Offsets())
    ids = TokenFile(path, load_array(path, ids_dtype(tokenizer)))
    segments, documents = (load_array(companion(path, n), np.int64) for n in ("segments", "documents"))
    if not len(segments):  # an empty corpus writes no leading 0
        segments = documents = np.zeros(1, dtype=np.int64)
    return SegmentFile(ids, segments, documents)
