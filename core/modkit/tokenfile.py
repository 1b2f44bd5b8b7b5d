"""Token files: a text corpus tokenized once into a flat memory-mapped array of ids.

A corpus bigger than memory trains from a token file: the text is read in chunks, encoded by
worker processes, and the ids are appended to ``tokens-<tokenizer>-<corpus>.u16`` (``.u32``
when the vocabulary does not fit 16 bits) in a cache folder; the name holds the sha256 of the
tokenizer's JSON and of the corpus, so a rebuild with the same pair reuses the file. Readers
map it (numpy.memmap): resident memory stays flat however large the corpus, apart from the
page cache the kernel manages.

Chunks are cut after a newline, so the ids equal ``tokenizer.encode`` of each chunk joined,
which differs from encoding the whole text at once only where a token would span a line end.

Token files live in ``$MODKIT_CACHE/tokens`` (default ``~/.cache/modkit/tokens``), not in a
build's work folder: that folder is removed when a build succeeds, and the point of the
file is that the next build of the same corpus skips tokenization. Torch-free: numpy only.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from modkit.errors import UserError
from modkit.fileio import atomic_path, atomic_write_text, cache_folder, data_sha256

CHUNK_BYTES = 1 << 20  # text per worker task

def default_cache_folder() -> Path:
    return cache_folder() / "tokens"


@dataclass(frozen=True)
class TokenFile:
    """A token file on disk: ``ids`` is a read-only memory map (uint16 or uint32)."""

    path: Path
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def windows(ids: np.ndarray, starts, length: int) -> np.ndarray:
    """(len(starts), length) int64 windows of ``ids`` (a token file's map or a slice of it):
    only these windows are read from disk."""
    return np.stack([np.asarray(ids[s: s + length], dtype=np.int64) for s in starts])


def _text_chunks(path: Path) -> Iterator[str]:
    """The file as UTF-8 text in pieces of about CHUNK_BYTES, each ending after a newline."""
    rest = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK_BYTES)
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # no newline in the block: keep reading
                rest = block
                continue
            rest = block[cut:]
            yield _decode(block[:cut], path)
    if rest:
        yield _decode(rest, path)


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None


_worker_tokenizer = None


def _init_worker(tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _encode_chunk(text: str) -> list[int]:
    return _worker_tokenizer.encode(text)


def _dtype(tokenizer):
    return np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32


def token_file_path(tokenizer, corpus: Path, folder: Path | None = None) -> Path:
    """Where ``corpus``'s token file under ``tokenizer`` lives: named by both sha256s."""
    tok_hash = hashlib.sha256(json.dumps(tokenizer.to_json(), sort_keys=True).encode()).hexdigest()
    suffix = "u16" if _dtype(tokenizer) == np.uint16 else "u32"
    return Path(folder or default_cache_folder()) / f"tokens-{tok_hash[:16]}-{data_sha256(corpus)[:16]}.{suffix}"


def token_file(tokenizer, corpus: str | Path, *, folder: Path | None = None, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> TokenFile:
    """The token file of ``corpus`` under ``tokenizer``: made once (``workers`` processes;
    default: the CPUs, up to 8), then reused. ``progress(bytes_done, bytes_total)`` is
    called as chunks are encoded."""
    corpus = Path(corpus)
    if not corpus.is_file():
        raise UserError(f"{corpus}: no such data file")
    path = token_file_path(tokenizer, corpus, folder)
    dtype = _dtype(tokenizer)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(tokenizer, corpus, path, dtype, workers, progress)
    ids = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype=dtype)
    return TokenFile(path, ids)


def _write(tokenizer, corpus: Path, path: Path, dtype, workers: int | None,
           progress: Callable[[int, int], None] | None) -> None:
    total = corpus.stat().st_size
    workers = workers or min(8, os.cpu_count() or 1)
    done = count = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        for text, ids in _encoded(tokenizer, _text_chunks(corpus), workers):
            out.write(np.asarray(ids, dtype=dtype).tobytes())
            count += len(ids)
            done += len(text.encode("utf-8"))
            if progress:
                progress(done, total)
        out.flush()
    atomic_write_text(path.with_suffix(path.suffix + ".json"), json.dumps(
        {"corpus": str(corpus), "tokens": count, "dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size}))


def _encoded(tokenizer, chunks: Iterator[str], workers: int) -> Iterator[tuple[str, list[int]]]:
    """(chunk, ids) in order; with workers > 1, at most 2·workers chunks in flight (flat memory)."""
    if workers <= 1:
        for text in chunks:
            yield text, tokenizer.encode(text)
        return
    # spawn, not fork: the parent may hold torch's threads, which a fork would copy mid-state
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(tokenizer,)) as pool:
        pending = []
        for text in chunks:
            pending.append((text, pool.submit(_encode_chunk, text)))
            if len(pending) >= 2 * workers:
                text0, fut = pending.pop(0)
                yield text0, fut.result()
        for text0, fut in pending:
            yield text0, fut.result()


def print_progress(label: str, stream=None) -> Callable[[int, int], None]:
    """A ``progress`` callback printing ``label: N% of X MB`` at every tenth."""
    stream = stream or sys.stderr
    shown = [-1]

    def show(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth > shown[0]:
            shown[0] = tenth
            print(f"{label}: {100 * done // max(total, 1)}% of {total / 1e6:.1f} MB", file=stream, flush=True)
    return show
