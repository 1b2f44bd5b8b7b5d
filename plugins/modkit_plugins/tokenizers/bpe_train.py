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
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Sequence

Progress = Callable[[int, int], None]
_LINES_PER_BLOCK = 200_000


def count_words(files: Sequence[str | Path], words: Callable[[str], list[str]]) -> Counter[str]:
    """Count the pre-tokenized words of every line of ``files``. Lines are counted first, in
    blocks, so a line that repeats (blank lines, code, markup) is pre-tokenized once."""
    counts: Counter[str] = Counter()
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as f:
            while block := list(islice(f, _LINES_PER_BLOCK)):
                once: list[str] = []
                for line, repeats in Counter(block).items():
                    if repeats == 1:
                        once += words(line)
                    else:
                        for word in words(line):
                            counts[word] += repeats
                counts.update(once)
    return counts


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
    """Rewrite every word containing ``pair`` in place, adjusting only the pairs next to each
    merge; return the new pairs (their counts went up)."""
    a, b = pair
    touched: set[tuple[int, int]] = set()
    for index in sorted(pair_words.pop(pair, ())):
        seq = seqs[index]
        count = counts[index]
        i = 0
        while i < len(seq) - 1:
            if seq[i] != a or seq[i + 1] != b:
                i += 1
                continue
            if i > 0:  # the left neighbour may itself be `new`, merged a moment ago
                left = seq[i - 1]
                pair_counts[(left, a)] -= count
                grown = (left, new)
                pair_counts[grown] += count
                pair_words[grown].add(index)
                touched.add(grown)
            if i + 2 < len(seq):
                right = seq[i + 2]
                pair_counts[(b, right)] -= count
                grown = (new, right)
                pair_counts[grown] += count
                pair_words[grown].add(index)
                touched.add(grown)
            seq[i : i + 2] = [new]
            i += 1
    pair_counts.pop(pair, None)
    return touched
