"""Cutting normalized text into pieces: SentencePiece BPE (merges by score) and Hugging Face's
BPE (merges by rank), and what Unigram (:mod:`.spm_unigram`) shares with them. Each gives
``(start, end, id)`` spans of the normalized text, with the unk id where nothing in the
vocabulary covers a character."""
from __future__ import annotations

import heapq
import re
from typing import Iterable

_END = ""  # the key under which a trie node keeps the id of the piece ending there
UNK_PENALTY = 10.0  # sentencepiece's kUnkPenalty: an unknown character scores min_score - 10
CACHE_LIMIT = 1 << 16  # words a segmenter keeps; it starts again from empty when full


def build_trie(pieces: Iterable[tuple[str, int]]) -> dict:
    """A character trie of nested dicts; a node holds a piece's id under ``""``."""
    root: dict = {}
    for piece, piece_id in pieces:
        node = root
        for char in piece:
            node = node.setdefault(char, {})
        node[_END] = piece_id
    return root


def word_splitter(pieces: Iterable[str], space: str):
    """``findall`` cutting text into words (a run of ``space`` and what follows), where no
    piece can cross into the next word: None where a piece holds ``space`` right after
    another character (sentencepiece's ``split_by_whitespace`` off, a user-defined symbol
    with a space inside)."""
    if any(space in piece.lstrip(space) for piece in pieces):
        return None
    s = re.escape(space)
    return re.compile(f"{s}*[^{s}]+|{s}+").findall


class ScoredBPE:
    """sentencepiece's BPE: start from characters (a user-defined symbol is one frozen
    symbol), merge the adjacent pair whose joined piece scores highest (the leftmost on a
    tie) until none joins into a piece. An ``unused`` piece may be merged through but is cut
    back into the two pieces it was made of.

    ``split``: cuts text into words no merge crosses (see :func:`word_splitter`); each word's
    pieces are then cached (``use_cache``), as merges in one word never touch another. Not
    with ``unused`` pieces: sentencepiece cuts one back the way it was last made anywhere in
    the text.
    """

    def __init__(self, piece_ids: dict[str, int], scores: list[float], unk_id: int,
                 user_defined: frozenset[str], unused: frozenset[int], split=None):
        self.piece_ids = piece_ids
        self.scores = scores
        self.unk_id = unk_id
        self.user_defined = user_defined
        self._longest_user = max((len(s) for s in user_defined), default=0)
        self.unused = unused
        self._split = None if unused else split
        self.use_cache = True  # where ``_split`` allows it
        self._cache: dict[str, tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]]] = {}

    def segment(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, id) of each piece of ``text``."""
        if not (self.use_cache and self._split):
            return self._merge(text)
        spans: list[tuple[int, int, int]] = []
        at = 0
        for word, (_, word_spans) in zip(*self._words(text)):
            spans += [(at + a, at + b, i) for a, b, i in word_spans] if at else word_spans
            at += len(word)
        return spans

    def ids(self, text: str) -> list[int] | None:
        """The ids of :meth:`segment`, or None where an unknown piece is among them."""
        if not (self.use_cache and self._split):
            ids = [i for _, _, i in self._merge(text)]
        else:
            ids = [i for word_ids, _ in self._words(text)[1] for i in word_ids]
        return None if self.unk_id in ids else ids

    def _words(self, text: str) -> tuple[list[str], list]:
        words = self._split(text)
        cache = self._cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        for word in words:
            if word not in cache:
                spans = tuple(self._merge(word))
                cache[word] = tuple(i for _, _, i in spans), spans
        return words, list(map(cache.__getitem__, words))

    def _symbols(self, text: str) -> tuple[list[str], list[bool]]:
        symbols, frozen = [], []
        i, n = 0, len(text)
        while i < n:
            for length in range(min(self._longest_user, n - i), 0, -1):
                if text[i:i + length] in self.user_defined:
                    symbols.append(text[i:i + length])
                    frozen.append(True)
                    i += length
                    break
            else:
                symbols.append(text[i])
                frozen.append(False)
                i += 1
        return symbols, frozen

    def _merge(self, text: str) -> list[tuple[int, int, int]]:
        symbols, frozen = self._symbols(text)
        n = len(symbols)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1:] = [-1] if n else []
        piece_ids, scores = self.piece_ids, self.scores
        heap: list[tuple[float, int, int, int]] = []
        split: dict[str, tuple[str, str]] = {}  # an unused piece -> the two it was merged from

        def push(left: int, right: int) -> None:
            if left == -1 or right == -1 or frozen[left] or frozen[right]:
                return
            piece = symbols[left] + symbols[right]
            piece_id = piece_ids.get(piece)
            if piece_id is None:
                return
            if piece_id in self.unused:
                split[piece] = (symbols[left], symbols[right])
            heapq.heappush(heap, (-scores[piece_id], left, right, len(piece)))

        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not symbols[left] or not symbols[right] or len(symbols[left]) + len(symbols[right]) != size:
                continue  # one side has changed since the pair was queued
            symbols[left] += symbols[right]
            symbols[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])

        spans = []
        at, index = 0, 0 if n else -1
        while index != -1:
            for piece in self._resegment(symbols[index], split):
                spans.append((at, at + len(piece), piece_ids.get(piece, self.unk_id)))
                at += len(piece)
            index = nxt[index]
        return spans

    def _resegment(self, piece: str, split: dict[str, tuple[str, str]]) -> list[str]:
        piece_id = self.piece_ids.get(piece)
        if piece_id is None or piece_id not in self.unused or piece not in split:
            return [piece]
        left, right = split[piece]
        return self._resegment(left, split) + self._resegment(right, split)


class RankedBPE:
    """Hugging Face's BPE over one word: from characters, merge the adjacent pair of lowest
    rank (the leftmost on a tie) until no pair has one. Characters not in the vocabulary get
    ``unk_id``."""

    def __init__(self, vocab: dict[str, int], ranks: dict[tuple[str, str], int], unk_id: int):
        self.vocab = vocab
        self.ranks = ranks
        self.unk_id = unk_id

    def segment(self, word: str) -> list[tuple[int, int, int]]:
        symbols = list(word)
        ranks = self.ranks
        while len(symbols) > 1:
            best, at = None, -1
            for k in range(len(symbols) - 1):
                rank = ranks.get((symbols[k], symbols[k + 1]))
                if rank is not None and (best is None or rank < best):
                    best, at = rank, k
            if best is None:
                break
            symbols[at:at + 2] = [symbols[at] + symbols[at + 1]]
        spans, start = [], 0
        for symbol in symbols:
            spans.append((start, start + len(symbol), self.vocab.get(symbol, self.unk_id)))
            start += len(symbol)
        return spans
