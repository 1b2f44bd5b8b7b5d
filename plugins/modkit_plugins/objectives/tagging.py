"""Word-level tags over sub-tokens, and entity spans: what `token-classify` trains on and what
its served task reads back (torch-free).

BERT labels the first sub-token of each word and ignores the others (-100); a word's predicted
tag is its first sub-token's. Entity F1 compares BIO spans exactly, as seqeval's default
(conlleval) mode does: a span starts at ``B-X``, or at ``I-X`` after a tag of another type or
``O``, and runs over the ``I-X`` that follow.
"""
from __future__ import annotations

from typing import Sequence

IGNORE = -100


def first_subtokens(word_ids: Sequence[int | None]) -> list[int | None]:
    """For each token, its word's index if it is that word's first sub-token, else None."""
    out, previous = [], None
    for w in word_ids:
        out.append(w if w is not None and w != previous else None)
        previous = w
    return out


def token_labels(word_ids: Sequence[int | None], word_tags: Sequence[int]) -> list[int]:
    """Per token: the word's tag index at its first sub-token, -100 elsewhere."""
    return [IGNORE if w is None else word_tags[w] for w in first_subtokens(word_ids)]


def is_bio(tags: Sequence[str]) -> bool:
    """Whether a tag set reads as BIO spans (so entity F1 means something)."""
    return any(t.startswith(("B-", "I-")) for t in tags)


def spans(tags: Sequence[str | None]) -> set[tuple[str, int, int]]:
    """(type, first word, last word + 1) of every entity in a BIO tag sequence."""
    found, kind, start = set(), None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = (tag or "O").partition("-")
        if kind is not None and (prefix != "I" or name != kind):
            found.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            kind, start = name, i
    return found


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str | None]]) -> dict[str, float]:
    """Micro precision, recall and F1 of exactly matching entity spans over all sentences."""
    right = n_gold = n_pred = 0
    for g, p in zip(gold, predicted):
        g_spans, p_spans = spans(g), spans(p)
        right += len(g_spans & p_spans)
        n_gold += len(g_spans)
        n_pred += len(p_spans)
    precision = right / n_pred if n_pred else 0.0
    recall = right / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1, "entities": n_gold}
