"""Atomic writes leave files with the modes the umask gives, not mkstemp's private ones."""
from __future__ import annotations

import os
import stat

import pytest

from modkit.fileio import atomic_dir, atomic_path, atomic_write_text


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_and_folders_get_the_umask_modes(tmp_path, umask):
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")  # overwrites the placeholder, keeping its mode
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "c.txt").write_text("z")
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "b.bin") == 0o666 & ~umask
    assert mode(tmp_path / "out") == 0o777 & ~umask
    assert mode(tmp_path / "out" / "c.txt") == 0o666 & ~umask
