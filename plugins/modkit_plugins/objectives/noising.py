"""BART's noising functions (Lewis et al. 2019, section 2.2) on lists of ids, drawn with a
torch generator: token masking, token deletion, text infilling, sentence permutation and
document rotation."""
from __future__ import annotations

import math

import torch


def _rand(generator: torch.Generator, n: int = 1) -> list[float]:
    return torch.rand(n, generator=generator).tolist()


def poisson_span_lengths(budget: int, lam: float, generator: torch.Generator) -> list[int]:
    """Span lengths drawn from Poisson(``lam``) until they cover ``budget`` tokens; the last is
    cut so they cover exactly ``budget``. Zero-length spans are kept (they insert a mask)."""
    lengths: list[int] = []
    while sum(lengths) < budget:
        lengths += torch.poisson(torch.full((max(4, int(2 * budget / max(lam, 1))),), float(lam)),
                                 generator=generator).long().tolist()
        total = 0
        for k, n in enumerate(lengths):
            total += n
            if total >= budget:
                lengths = lengths[: k + 1]
                lengths[-1] -= total - budget
                break
    return lengths


def text_infilling(tokens: list[int], ratio: float, lam: float, mask_id: int,
                   generator: torch.Generator) -> tuple[list[int], list[int]]:
    """ceil(ratio * n) tokens in Poisson(lam) spans, each span replaced by one mask token (a
    zero-length span inserts one). Returns the noised ids and the span lengths."""
    budget = math.ceil(len(tokens) * ratio)
    if not tokens or budget == 0:
        return list(tokens), []
    lengths = poisson_span_lengths(budget, lam, generator)
    kept = len(tokens) - budget
    # each span goes before one of the kept tokens or at the end: gaps 0..kept
    gaps = sorted(torch.randint(kept + 1, (len(lengths),), generator=generator).tolist())
    out, source, span = [], 0, 0
    for gap in range(kept + 1):
        while span < len(gaps) and gaps[span] == gap:
            out.append(mask_id)
            source += lengths[span]
            span += 1
        if gap < kept:
            out.append(tokens[source])
            source += 1
    return out, lengths


def token_masking(tokens: list[int], ratio: float, mask_id: int, generator: torch.Generator) -> list[int]:
    draws = _rand(generator, len(tokens))
    return [mask_id if d < ratio else t for t, d in zip(tokens, draws)]


def token_deletion(tokens: list[int], ratio: float, generator: torch.Generator) -> list[int]:
    draws = _rand(generator, len(tokens))
    return [t for t, d in zip(tokens, draws) if d >= ratio]


def permute_sentences(sentences: list[list[int]], ratio: float, generator: torch.Generator) -> list[list[int]]:
    """A share ``ratio`` of the sentences (all, for BART) shuffled among their places."""
    n = math.ceil(len(sentences) * ratio)
    if n < 2:
        return list(sentences)
    places = sorted(torch.randperm(len(sentences), generator=generator)[:n].tolist())
    shuffled = [places[i] for i in torch.randperm(n, generator=generator).tolist()]
    out = list(sentences)
    for place, source in zip(places, shuffled):
        out[place] = sentences[source]
    return out


def rotate(tokens: list[int], generator: torch.Generator) -> list[int]:
    """The document started at a token drawn uniformly (not the first)."""
    if len(tokens) < 2:
        return list(tokens)
    k = int(torch.randint(1, len(tokens), (1,), generator=generator))
    return tokens[k:] + tokens[:k]
