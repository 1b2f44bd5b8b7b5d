"""The runtime's repetition penalty, banned words and suppressed tokens: numpy twins of
:mod:`modkit.nn.processors` for one row of scores (V,) and its tokens so far (no torch here)."""
from __future__ import annotations

import numpy as np


def penalize_repeats(scores: np.ndarray, sequence: list[int], penalty: float) -> None:
    """In place: a token already in ``sequence`` scores s * ``penalty`` where s < 0, else
    s / ``penalty`` (in float32, as torch computes it); once, however often it occurs."""
    vocab = scores.shape[-1]
    seen_ids = np.unique(np.array([t for t in sequence if t < vocab], dtype=np.int64))
    seen, p = scores[seen_ids], np.float32(penalty)
    scores[seen_ids] = np.where(seen < 0, seen * p, seen / p)


def banned_words(sequence: list[int], words: tuple[tuple[int, ...], ...], eos_token_id: int | None) -> list[int]:
    """The tokens that would complete a word of ``words`` after ``sequence``: every one-token
    word but the eos alone (transformers keeps the eos reachable), and the last token of a
    longer word whose other tokens end the sequence."""
    n = len(sequence)
    return [w[-1] for w in words if w != (eos_token_id,) and len(w) - 1 <= n
            and list(w[:-1]) == sequence[n + 1 - len(w):]]


def suppressed(tokens: tuple[int, ...], vocab: int) -> list[int]:
    """The tokens of ``tokens`` that have a score (transformers ignores the others)."""
    return [t for t in tokens if t < vocab]
