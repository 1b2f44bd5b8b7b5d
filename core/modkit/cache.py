"""What ``$MODKIT_CACHE`` holds, and clearing it (``modkit cache``).

Everything there is made again on demand, so any of it may go: token files (``tokens/``), data
sources converted to the form an objective reads (``data/``) and the measured matmul peak
(``matmul-peak.json``). A file another build is reading stays readable after it is removed
(its memory map keeps it), and a file being written (a ``.NAME.tmp`` beside its target) is
left alone unless it is older than ``--older-than``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from modkit.errors import UserError
from modkit.fileio import cache_folder

#: the cache's parts: name -> what it holds
PARTS = {"tokens": "token files: corpora tokenized once, memory-mapped by training",
         "data": "data sources converted to the form an objective reads (text or JSON lines)",
         "matmul-peak.json": "the best matrix-product rate measured per device (MFU's bound)"}


@dataclass(frozen=True)
class Entry:
    part: str
    path: Path
    size: int
    mtime: float

    @property
    def writing(self) -> bool:
        return self.path.name.startswith(".") and self.path.name.endswith(".tmp")


def entries(root: Path | None = None, parts: tuple[str, ...] = ()) -> list[Entry]:
    """Every file of the chosen parts (all by default), oldest first."""
    root = root or cache_folder()
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise UserError(f"cache: no part {unknown[0]!r}; the parts are {', '.join(PARTS)}")
    found = []
    for part in parts or tuple(PARTS):
        path = root / part
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for f in files:
            stat = f.stat()
            found.append(Entry(part, f, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda e: e.mtime)


def clear(root: Path | None = None, parts: tuple[str, ...] = (), older_than_days: float | None = None,
          dry_run: bool = False) -> list[Entry]:
    """Remove the chosen parts' files (only those made over ``older_than_days`` ago, if given); return them."""
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    chosen = [e for e in entries(root, parts)
              if (e.mtime < cutoff if cutoff is not None else not e.writing)]
    if not dry_run:
        for e in chosen:
            e.path.unlink(missing_ok=True)
    return chosen


def human(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"


__all__ = ["PARTS", "Entry", "entries", "clear", "human"]
