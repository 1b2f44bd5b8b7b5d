"""Cutting normalized text into pieces: Unigram (Viterbi over piece scores) and SentencePiece
BPE (merges by score). Both give ``(start, end, id)`` spans of the normalized text, with
the unk id where nothing in the vocabulary covers a character."""
from __future__ import annotations

import heapq
import random
from array import array
from typing import Iterable

_END = ""  # the key under which a trie node keeps the id of the piece ending there
UNK_PENALTY = 10.0  # sentencepiece's kUnkPenalty: an unknown character scores min_score - 10


def build_trie(pieces: Iterable[tuple[str, int]]) -> dict:
    """A character trie of nested dicts; a node holds a piece's id under ``""``."""
    root: dict = {}
    for piece, piece_id in pieces:
        node = root
        for char in piece:
            node = node.setdefault(char, {})
        node[_END] = piece_id
    return root


def _with_scores(trie: dict, scores: list[float]) -> dict:
    """A copy of ``trie`` whose nodes hold (id, score) of their piece, one lookup fewer per step."""
    return {key: (child, scores[child]) if key == _END else _with_scores(child, scores)
            for key, child in trie.items()}


class Unigram:
    """Viterbi segmentation as sentencepiece's ``EncodeOptimized`` does it.

    ``scores[id]`` is each piece's score; ``trie`` holds the pieces a segmentation may use.
    ``float32_paths``: add and compare path scores in float32, as sentencepiece does, so two
    paths whose real sums differ by a rounding step can tie; Hugging Face's ``tokenizers``
    uses doubles. Ties go to the first candidate seen (earlier start, then shorter piece), as
    in both.
    """

    def __init__(self, trie: dict, scores: list[float], unk_id: int, unk_score: float, *,
                 float32_paths: bool):
        self.trie = trie
        self.scores = scores
        self.unk_id = unk_id
        self.float32_paths = float32_paths
        self.unk_score = self._round(unk_score)
        self._scored_trie = _with_scores(trie, scores)

    def _round(self, value: float) -> float:
        return array("f", [value])[0] if self.float32_paths else value

    def segment(self, text: str) -> list[tuple[int, int, int]]:
        n = len(text)
        if not n:
            return []
        minus_inf = float("-inf")  # nothing reaches there yet: the first candidate always wins
        best = array("f", [minus_inf]) * (n + 1) if self.float32_paths else [minus_inf] * (n + 1)
        best[0] = 0.0
        rounded = array("f", [0.0]) if self.float32_paths else [0.0]
        starts = [-1] * (n + 1)
        ids = [0] * (n + 1)
        trie, unk_id, unk_score = self._scored_trie, self.unk_id, self.unk_score
        for i in range(n):
            here = best[i]
            node = trie
            single = False
            j = i
            while j < n:
                node = node.get(text[j])
                if node is None:
                    break
                j += 1
                scored = node.get(_END)
                if scored is None:
                    continue
                rounded[0] = scored[1] + here
                candidate = rounded[0]
                if candidate > best[j]:
                    best[j] = candidate
                    starts[j] = i
                    ids[j] = scored[0]
                if j == i + 1:
                    single = True
            if not single:
                rounded[0] = unk_score + here
                candidate = rounded[0]
                if candidate > best[i + 1]:
                    best[i + 1] = candidate
                    starts[i + 1] = i
                    ids[i + 1] = unk_id
        spans = []
        end = n
        while end > 0:
            start = starts[end]
            spans.append((start, end, ids[end]))
            end = start
        spans.reverse()
        return spans

    def sample(self, text: str, alpha: float, rng: random.Random) -> list[tuple[int, int, int]]:
        """One segmentation drawn with probability proportional to exp(alpha * score), by
        forward filtering and backward sampling over the lattice (Kudo 2018, nbest_size -1)."""
        import math

        n = len(text)
        if not n:
            return []
        edges: list[list[tuple[int, int, float]]] = [[] for _ in range(n + 1)]  # by end: (start, id, score)
        for i in range(n):
            node = self.trie
            single = False
            j = i
            while j < n:
                node = node.get(text[j])
                if node is None:
                    break
                j += 1
                piece_id = node.get(_END)
                if piece_id is not None:
                    edges[j].append((i, piece_id, self.scores[piece_id]))
                    single = single or j == i + 1
            if not single:
                edges[i + 1].append((i, self.unk_id, self.unk_score))
        alphas = [0.0] + [-math.inf] * n  # log of the summed weight of all paths to each position
        for j in range(1, n + 1):
            terms = [alphas[i] + alpha * score for i, _, score in edges[j]]
            top = max(terms)
            alphas[j] = top + math.log(sum(math.exp(t - top) for t in terms))
        spans = []
        end = n
        while end > 0:
            weights = [math.exp(alphas[i] + alpha * score - alphas[end]) for i, _, score in edges[end]]
            start, piece_id, _ = rng.choices(edges[end], weights)[0]
            spans.append((start, end, piece_id))
            end = start
        spans.reverse()
        return spans


class ScoredBPE:
    """sentencepiece's BPE: start from characters (a user-defined symbol is one frozen
    symbol), merge the adjacent pair whose joined piece scores highest (the leftmost on a
    tie) until none joins into a piece. An ``unused`` piece may be merged through but is cut
    back into the two pieces it was made of."""

    def __init__(self, piece_ids: dict[str, int], scores: list[float], unk_id: int,
                 user_defined: frozenset[str], unused: frozenset[int]):
        self.piece_ids = piece_ids
        self.scores = scores
        self.unk_id = unk_id
        self.user_defined = user_defined
        self._longest_user = max((len(s) for s in user_defined), default=0)
        self.unused = unused

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

    def segment(self, text: str) -> list[tuple[int, int, int]]:
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
