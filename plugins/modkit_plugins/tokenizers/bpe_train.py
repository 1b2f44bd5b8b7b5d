"""Learning BPE merges with incremental pair counts.

Every word is a sequence of symbol ids with a count. We keep the count of every adjacent
pair and, for each pair, the words it occurs in; a merge rewrites only those words and
adjusts only the pairs they contain. A max-heap with lazy deletion finds the next pair:
an entry whose count is stale is re-pushed with the current count when popped.

Tie-breaking (documented in docs/tokenizers.md): the most frequent pair wins; among pairs
of equal count, the one whose (left, right) token strings sort first (Python string order,
i.e. by code point) wins. The result depends only on the word counts, never on dict or
set order.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Callable, Iterable

Progress = Callable[[int, int], None]


def learn_merges(
    words: dict[tuple[str, ...], int],
    alphabet: Iterable[str],
    max_tokens: int,
    min_frequency: int = 2,
    progress: Progress | None = None,
    join: Callable[[str, str], str] = str.__add__,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn merges until the vocabulary holds ``max_tokens`` tokens or no pair occurs
    ``min_frequency`` times. Returns (tokens in id order, merges in rank order); the tokens
    start with the sorted alphabet (every symbol of every word is added to it). ``join``
    spells a merged token (WordPiece drops the right side's '##').
    """
    symbols = sorted(set(alphabet).union(*words.keys()) if words else set(alphabet))
    symbol_id = {s: i for i, s in enumerate(symbols)}
    seqs = [[symbol_id[s] for s in w] for w in words]
    counts = list(words.values())

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    pair_words: dict[tuple[int, int], set[int]] = defaultdict(set)
    for index, seq in enumerate(seqs):
        count = counts[index]
        for pair in zip(seq, seq[1:]):
            pair_counts[pair] += count
            pair_words[pair].add(index)

    heap = [(-c, symbols[a], symbols[b], (a, b)) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    target = max(max_tokens - len(symbols), 0)
    while len(symbols) < max_tokens and heap:
        neg_count, left, right, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:  # stale entry: its pair was touched by an earlier merge
            if count > 0:
                heapq.heappush(heap, (-count, left, right, pair))
            continue
        if count < min_frequency:
            break
        merged = join(left, right)
        new = symbol_id.get(merged)
        if new is None:  # two different pairs may spell the same token; it keeps one id
            new = symbol_id[merged] = len(symbols)
            symbols.append(merged)
        merges.append((left, right))
        touched = _apply_merge(pair, new, seqs, counts, pair_counts, pair_words)
        for p in touched:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, symbols[p[0]], symbols[p[1]], p))
        if progress is not None:
            progress(len(merges), target)
    return symbols, merges


def _apply_merge(pair, new, seqs, counts, pair_counts, pair_words) -> set[tuple[int, int]]:
    """Rewrite every word containing ``pair``; return the pairs whose count went up."""
    a, b = pair
    touched: set[tuple[int, int]] = set()
    for index in sorted(pair_words.pop(pair, ())):
        seq = seqs[index]
        count = counts[index]
        out: list[int] = []
        i, n = 0, len(seq)
        changed = False
        while i < n:
            if i + 1 < n and seq[i] == a and seq[i + 1] == b:
                out.append(new)
                i += 2
                changed = True
            else:
                out.append(seq[i])
                i += 1
        if not changed:  # the pair left this word in an earlier merge
            continue
        for p in zip(seq, seq[1:]):
            pair_counts[p] -= count
        for p in zip(out, out[1:]):
            pair_counts[p] += count
            if new in p:
                pair_words[p].add(index)
                touched.add(p)
        seqs[index] = out
    pair_counts.pop(pair, None)
    return touched
