"""transformers' repetition penalty, banned words and suppressed tokens, on torch scores (B, V).

Each mirrors the transformers logits processor of the same name, operation for operation, so
that ties break the same way; :func:`modkit.nn.generation.constrain` applies them in
transformers' order. The runtime's numpy twins are in :mod:`modkit.runtime.processors`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def penalize_repeats(sequences: torch.Tensor, scores: torch.Tensor, penalty: float,
                     skip: torch.Tensor | None = None) -> torch.Tensor:
    """``RepetitionPenaltyLogitsProcessor``: a token already in a row of ``sequences`` (B, L)
    scores s * ``penalty`` where s < 0, else s / ``penalty``; once, however often it occurs.
    The first ``skip`` (B,) tokens of each row do not count (transformers leaves out a
    left-padded prompt's padding)."""
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    vocab = scores.shape[-1]
    ids = sequences.clamp(max=vocab)  # tokens past the scores go to a spare column, dropped below
    if skip is not None:
        ids = ids.masked_fill(torch.arange(ids.shape[1], device=ids.device)[None] < skip[:, None], vocab)
    padded = F.pad(scores, (0, 1))
    seen = padded.gather(1, ids)
    return padded.scatter(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))[:, :vocab]


def ban_words(sequences: torch.Tensor, scores: torch.Tensor, words: list[list[int]],
              eos_token_id: int | None) -> torch.Tensor:
    """``NoBadWordsLogitsProcessor``: a one-token word scores -inf always; a longer word's last
    token scores -inf where a row of ``sequences`` (prompt included) ends with the word's
    other tokens. The eos alone is never banned (transformers drops that word)."""
    vocab, length = scores.shape[-1], sequences.shape[-1]
    outside = sorted({t for word in words for t in word if t >= vocab})
    if outside:
        raise ValueError(f"bad_words_ids: tokens {outside} are outside the vocabulary ({vocab})")
    banned = torch.zeros_like(scores, dtype=torch.bool)
    for word in words:
        if list(word) == [eos_token_id]:
            continue
        if len(word) == 1:
            banned[:, word[0]] = True
        elif len(word) - 1 <= length:
            prefix = torch.tensor(word[:-1], device=sequences.device)
            banned[:, word[-1]] |= (sequences[:, length + 1 - len(word):] == prefix).all(-1)
    return scores.masked_fill(banned, float("-inf"))


def suppress(scores: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """``SuppressTokensLogitsProcessor``: ``tokens`` score -inf (those past the vocabulary are
    ignored, as transformers does)."""
    vocab = scores.shape[-1]
    banned = torch.zeros(vocab, dtype=torch.bool, device=scores.device)
    banned[torch.tensor([t for t in tokens if t < vocab], dtype=torch.long, device=scores.device)] = True
    return scores.masked_fill(banned, float("-inf"))

