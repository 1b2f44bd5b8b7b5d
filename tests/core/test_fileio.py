"""Atomic writes leave files with the modes the umask gives, not mkstemp's private ones."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

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
        save_file({"w": torch.zeros(2)}, str(tmp))  # safetensors writes 0600 itself
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "c.txt").write_text("z")
        save_file({"w": torch.zeros(2)}, str(tmp / "d.safetensors"))
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "b.bin") == 0o666 & ~umask
    assert mode(tmp_path / "out") == 0o777 & ~umask
    assert mode(tmp_path / "out" / "c.txt") == mode(tmp_path / "out" / "d.safetensors") == 0o666 & ~umask
