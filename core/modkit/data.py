"""Helpers objectives share to read data and make batches."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from modkit.errors import UserError


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such data file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_jsonl(path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a bad line is an error naming the file and line."""
    return [record for _, record in numbered_jsonl(path, required)]


def numbered_jsonl(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a JSON-lines file, so a caller checking values can name
    the line too."""
    records = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}:{n}: not valid JSON ({e})") from None
        missing = [k for k in required if not isinstance(record, dict) or k not in record]
        if missing:
            raise UserError(f"{path}:{n}: missing field {missing[0]!r}")
        records.append((n, record))
    if not records:
        raise UserError(f"{path}: no records")
    return records


def split_holdout(items: list, fraction: float) -> tuple[list, list]:
    """Every k-th item (k = 1/fraction) is held back: deterministic, no RNG needed."""
    if fraction <= 0:
        return items, []
    k = max(2, round(1 / fraction))
    return [x for i, x in enumerate(items) if i % k], [x for i, x in enumerate(items) if i % k == 0]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int):
    """Right-pad id lists -> (input_ids, attention_mask) int64 tensors."""
    import torch

    import numpy as np

    width = max(len(s) for s in sequences)
    # through numpy, from nested lists: torch.tensor per row (or on nested lists) is ten times
    # slower and made batching the slowest part of drawing examples (`modkit preview`)
    ids = np.array([[*s, *[pad_id] * (width - len(s))] for s in sequences], dtype=np.int64).reshape(len(sequences), width)
    mask = (np.arange(width) < np.array([len(s) for s in sequences])[:, None]).astype(np.int64)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def device_of(module) -> Any:
    """The device a module's weights are on: where an objective puts the tensors it builds
    itself (in ``evaluate``), since a build may train on a GPU."""
    import torch

    return next(iter(module.parameters()), torch.empty(0)).device
