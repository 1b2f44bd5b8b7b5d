"""Token files: a text corpus tokenized once into a flat memory-mapped array of ids.

A corpus bigger than memory trains from a token file: the text is read in chunks, encoded by
worker processes, and the ids are appended to ``tokens-<tokenizer>-<corpus>.u16`` (``.u32``
when the vocabulary does not fit 16 bits) in a cache folder; the name holds the sha256 of the
tokenizer's JSON and of the corpus, so a rebuild with the same pair reuses the file. Readers
map it (numpy.memmap): resident memory stays flat however large the corpus, apart from the
page cache the kernel manages.

Chunks are cut after a newline, so the ids equal ``tokenizer.encode`` of each chunk joined,
which differs from encoding the whole text at once only where a token would span a line end.

A token file may carry one uint8 *mark* per id (``marks=``: a function of the tokenizer and a
chunk's text returning its ids and their marks, word starts say), written in the same pass
to ``<token file>.marks``; and arrays computed once from a token file (an index of examples,
say) are kept beside it by :meth:`TokenFile.derived`. :mod:`modkit.segmentfile` builds on this
for corpora of documents made of sentences.

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
from typing import Any, Callable, Iterable, Iterator

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
    marks: np.ndarray | None = None  # (N,) uint8 per id, for a file made with ``marks=``

    def __len__(self) -> int:
        return len(self.ids)

    def derived(self, name: str, dtype, make: Callable[[], Iterable[np.ndarray]]) -> np.ndarray:
        """A 1-d ``dtype`` array computed from this file once (``make()`` yields its pieces, so
        it is never whole in memory), kept beside it as ``<token file>.<name>`` and memory-mapped.
        ``name`` must say everything the array depends on besides the file (an option's value)."""
        path = self.path.with_name(f"{self.path.name}.{name}")
        if not path.exists():
            with atomic_path(path) as tmp, open(tmp, "wb") as out:
                for piece in make():
                    out.write(np.asarray(piece, dtype=dtype).tobytes())
        return load_array(path, dtype)


def load_array(path: Path, dtype) -> np.ndarray:
    """A read-only memory map of a raw array file (an empty file: an empty array; numpy
    cannot map zero bytes)."""
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype=dtype)


def windows(ids: np.ndarray, starts, length: int) -> np.ndarray:
    """(len(starts), length) int64 windows of ``ids`` (a token file's map or a slice of it):
    only these windows are read from disk."""
    return np.stack([np.asarray(ids[s: s + length], dtype=np.int64) for s in starts])


def after_last_newline(block: bytes) -> int:
    return block.rfind(b"\n") + 1


def text_chunks(path: Path, cut: Callable[[bytes], int] = after_last_newline) -> Iterator[str]:
    """The file as UTF-8 text in pieces of about CHUNK_BYTES, each ending where ``cut`` says
    (by default after a newline); ``cut(block) <= 0``: no place to cut yet, read on."""
    rest = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK_BYTES)
            if not block:
                break
            block = rest + block
            at = cut(block)
            if at <= 0:
                rest = block
                continue
            rest = block[at:]
            yield decode_text(block[:at], path)
    if rest:
        yield decode_text(rest, path)


def decode_text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None


_worker: tuple[Any, Callable] | None = None  # a worker process's (tokenizer, encode)


def _init_worker(tokenizer, encode: Callable) -> None:
    global _worker
    _worker = (tokenizer, encode)


def _encode_chunk(text: str):
    tokenizer, encode = _worker
    return encode(tokenizer, text)


def _plain(tokenizer, text: str) -> tuple[list[int], None]:
    return tokenizer.encode(text), None


def function_tag(fn: Callable) -> str:
    """A short name for a module-level function, part of the cache name of what it computed:
    rename the function (or bump a version in its name) when what it computes changes."""
    return hashlib.sha256(f"{fn.__module__}.{fn.__qualname__}".encode()).hexdigest()[:8]


def ids_dtype(tokenizer):
    return np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32


def token_file_path(tokenizer, corpus: Path, folder: Path | None = None, *, kind: str = "tokens",
                    tag: str = "") -> Path:
    """Where ``corpus``'s token file under ``tokenizer`` lives: named by both sha256s (and
    ``tag``, the function that marked or split it, if any)."""
    tok_hash = hashlib.sha256(json.dumps(tokenizer.to_json(), sort_keys=True).encode()).hexdigest()
    suffix = "u16" if ids_dtype(tokenizer) == np.uint16 else "u32"
    name = f"{kind}-{tok_hash[:16]}-{data_sha256(corpus)[:16]}" + (f"-{tag}" if tag else "")
    return Path(folder or default_cache_folder()) / f"{name}.{suffix}"


def token_file(tokenizer, corpus: str | Path, *, folder: Path | None = None, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None,
               marks: Callable[[Any, str], tuple[list[int], list]] | None = None) -> TokenFile:
    """The token file of ``corpus`` under ``tokenizer``: made once (``workers`` processes;
    default: the CPUs, up to 8), then reused. ``progress(bytes_done, bytes_total)`` is
    called as chunks are encoded. With ``marks`` (a module-level function, so that workers
    can import it), ``marks(tokenizer, chunk)`` gives each chunk's ids and one 0..255 mark
    per id, kept in :attr:`TokenFile.marks`."""
    corpus = Path(corpus)
    if not corpus.is_file():
        raise UserError(f"{corpus}: no such data file")
    path = token_file_path(tokenizer, corpus, folder, tag=function_tag(marks) if marks else "")
    dtype = ids_dtype(tokenizer)
    if not is_whole(path, ("marks",) if marks else ()):
        write_encoded(tokenizer, corpus, path, text_chunks(corpus), marks or _plain, workers, progress,
                      ("marks",) if marks else ())
    return TokenFile(path, load_array(path, dtype), load_array(companion(path, "marks"), np.uint8) if marks else None)


def is_whole(path: Path, companions: tuple[str, ...]) -> bool:
    """Whether the token file ``path`` and its companions are all there (``modkit cache clear
    --older-than`` removes files one by one)."""
    return path.exists() and all(companion(path, name).exists() for name in companions)


def companion(path: Path, name: str) -> Path:
    """A file written with the token file ``path`` (its marks, its segment offsets)."""
    return path.with_name(f"{path.name}.{name}")


def write_encoded(tokenizer, corpus: Path, path: Path, chunks: Iterator[str], encode: Callable, workers: int | None,
                  progress: Callable[[int, int], None] | None, companions: tuple[str, ...],
                  extra: Callable[[Any], dict[str, list]] | None = None) -> None:
    """Encode ``chunks`` with ``encode(tokenizer, chunk)`` -> (ids, per-id marks or None) and
    write the ids to ``path``. ``companions`` names the arrays written beside it: "marks"
    (uint8 per id) and the int64 arrays ``extra(result)`` returns per chunk (by name). The
    companions are committed first, the ids file last: its presence means all are whole."""
    total = corpus.stat().st_size
    workers = workers or min(8, os.cpu_count() or 1)
    dtype = ids_dtype(tokenizer)
    done = count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as out, _Companions(path, companions) as side:
        for text, result in _encoded(tokenizer, chunks, workers, encode):
            ids, marks = result[0], result[1]
            out.write(np.asarray(ids, dtype=dtype).tobytes())
            if marks is not None:
                side.write("marks", np.asarray(marks, dtype=np.uint8))
            for name, values in (extra(result) if extra else {}).items():
                side.write(name, np.asarray(values, dtype=np.int64))
            count += len(ids)
            done += len(text.encode("utf-8"))
            if progress:
                progress(done, total)
        out.flush()
    atomic_write_text(path.with_suffix(path.suffix + ".json"), json.dumps(
        {"corpus": str(corpus), "tokens": count, "dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size}))


class _Companions:
    """The companion files of a token file being written, each atomic, committed on a clean exit."""

    def __init__(self, path: Path, names: tuple[str, ...]):
        self._paths = {name: companion(path, name) for name in names}
        self._open: dict[str, Any] = {}

    def __enter__(self):
        self._contexts = {name: atomic_path(p) for name, p in self._paths.items()}
        self._open = {name: open(ctx.__enter__(), "wb") for name, ctx in self._contexts.items()}
        return self

    def write(self, name: str, values: np.ndarray) -> None:
        self._open[name].write(values.tobytes())

    def __exit__(self, *exc):
        for name, f in self._open.items():
            f.close()
            self._contexts[name].__exit__(*exc)
        return False


def _encoded(tokenizer, chunks: Iterator[str], workers: int, encode: Callable) -> Iterator[tuple[str, Any]]:
    """(chunk, encode(tokenizer, chunk)) in order; with workers > 1, at most 2·workers chunks in
    flight (flat memory)."""
    if workers <= 1:
        for text in chunks:
            yield text, encode(tokenizer, text)
        return
    # spawn, not fork: the parent may hold torch's threads, which a fork would copy mid-state
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(tokenizer, encode)) as pool:
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
