"""Crash-safe file writing: write to a temporary name beside the target, then rename."""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_umask_lock = threading.Lock()


def cache_folder() -> Path:
    """Where modkit keeps what outlives a build (token files, the measured matmul peak):
    ``$MODKIT_CACHE``, default ``~/.cache/modkit``."""
    return Path(os.environ.get("MODKIT_CACHE") or Path.home() / ".cache" / "modkit")


def _normal_mode(directory: bool) -> int:
    """The mode ``open``/``mkdir`` would give under the current umask: mkstemp's 0600 and
    mkdtemp's 0700 would hide an artifact from a service running as another user."""
    with _umask_lock:  # the umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path``, on error it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _normal_mode(directory=False))  # whoever wrote it (safetensors: 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``path`` (replacing an old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _normalise_modes(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _normalise_modes(folder: Path) -> None:
    """Give ``folder`` and everything in it the umask's modes (the writers' own vary)."""
    file_mode, dir_mode = _normal_mode(directory=False), _normal_mode(directory=True)
    os.chmod(folder, dir_mode)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), dir_mode)
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_sha256(path: Path) -> str:
    """``sha256_file`` of a data file, read once per process while the file is unchanged (same
    size, modification time and inode): a build keys its source record, its resume fingerprint
    and its token-file cache on the same corpus, which would otherwise be read three times."""
    st = os.stat(path)
    return _memo_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=1024)
def _memo_sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(Path(path))
