"""Helpers shared by the Hugging Face parity tests (not a test module itself)."""
from __future__ import annotations

import torch

TOL = 1e-5


def padded_batch(vocab: int, seed: int = 0, batch: int = 3, length: int = 9):
    """Random ids with left padding in row 1 and right padding in row 2."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, -4:] = 0
    return ids, mask


def max_diff(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None = None) -> float:
    """Largest absolute difference, over the (batch, time) positions where ``rows`` is 1."""
    d = (a - b).abs()
    if rows is not None:
        d = d[rows.bool()]
    return float(d.max())


def compare_outputs(ours, theirs, fields, rows=None) -> dict[str, float]:
    """Max abs difference per field; every hidden state and attention map counts."""
    diffs = {}
    for name in fields:
        a, b = getattr(ours, name), getattr(theirs, name, None)
        if b is None and name == "last_hidden_state":  # transformers' heads return only hidden_states
            b = theirs.hidden_states[-1]
        if name in ("hidden_states", "attentions"):
            assert a is not None and len(a) == len(b), name
            if name == "attentions":  # (B, H, Tq, Tk) -> (B, Tq, H, Tk): rows select queries
                a, b = [x.transpose(1, 2) for x in a], [y.transpose(1, 2) for y in b]
            diffs[name] = max(max_diff(x, y, rows) for x, y in zip(a, b))
        else:
            diffs[name] = max_diff(a, b, rows if a.dim() > 2 else None)
    return diffs
