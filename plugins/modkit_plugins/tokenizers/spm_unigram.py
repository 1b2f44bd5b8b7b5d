"""Unigram segmentation: Viterbi over piece scores, as sentencepiece's ``EncodeOptimized``
does it, with a cache of each word's segmentation.

Why a cache is exact. No lattice edge crosses a place where no piece holds the two
characters on either side of it (with sentencepiece's default ``split_by_whitespace``, the
start of each word), so every path passes there, and the best path over a text is the best
path over each word in turn. sentencepiece adds path scores in float32 from the start of
the text, so a word's scores there are offset by what the text reached before it, and
rounded at that magnitude: two paths whose sums differ by less than that rounding may swap.
A word is solved once from score 0 in doubles, keeping its best path's lead over its second
best; the cached path is used where the lead is wider than what rounding at the text's
magnitude can take away, and the word is solved again in place, from the score
sentencepiece's sums reach there, where it is not. (The two paths into a word's positions
start from the same float32 score at the word's start, so only the word's own additions
can round them apart.)
"""
from __future__ import annotations

import math
import random
from array import array
from itertools import chain
from operator import itemgetter
from typing import Callable

from .spm_native import NOT_BUILT, native
from .spm_segment import _END, CACHE_LIMIT


# A word's segmentation, a plain tuple (one is built for every new word): its ids, whether
# one of them is unknown, its room (the largest magnitude of a starting score from which the
# same path wins; see Unigram._solved), its weight (the magnitude of its path score), its
# extent (the largest magnitude a candidate path score takes inside it), where each piece
# ends, and its lead (best path score less the second best's). Ids and ends are tuples of
# ints, which the garbage collector stops tracking, where spans would be a tuple per piece
Solved = tuple
# sentencepiece (0.2.3) takes its float32 path scores back to 0 where one passes this
# magnitude (see Unigram._viterbi)
RESET_AT = 100000.0
_IDS, _HAS_UNK, _ROOM, _WEIGHT, _EXTENT = (itemgetter(k) for k in range(5))


def _lattice(trie: dict, scores: list[float]) -> dict:
    """``trie`` as nested dicts of character -> (child, id, score), id -1 where no piece
    ends: one lookup per step of a walk."""
    out = {}
    for char, child in trie.items():
        if char != _END:
            piece_id = child.get(_END, -1)
            out[char] = (_lattice(child, scores), piece_id, scores[piece_id] if piece_id >= 0 else 0.0)
    return out


def flatten_trie(trie: dict, scores: list[float]) -> tuple[list[int], list[int], list[int], list[float]]:
    """``trie`` as the compiled lattice takes it: node k + 1 is the child of node
    ``parents[k]`` (-1: the root) under code point ``chars[k]``; ``ids`` and ``scores`` of
    each node (index 0: the root), id -1 where no piece ends there."""
    parents: list[int] = []
    chars: list[int] = []
    ids, node_scores = [-1], [0.0]
    stack = [(trie, -1)]
    while stack:
        node, index = stack.pop()
        for char, child in node.items():
            if char == _END:
                continue
            parents.append(index)
            chars.append(ord(char))
            piece_id = child.get(_END, -1)
            ids.append(piece_id)
            node_scores.append(scores[piece_id] if piece_id >= 0 else 0.0)
            stack.append((child, len(parents) - 1))
    return parents, chars, ids, node_scores


def _depth(trie: dict) -> int:
    return max((1 + _depth(child) for key, child in trie.items() if key != _END), default=0)


class Unigram:
    """Viterbi segmentation as sentencepiece's ``EncodeOptimized`` does it.

    ``scores[id]`` is each piece's score; ``trie`` holds the pieces a segmentation may use.
    ``float32_paths``: add and compare path scores in float32, as sentencepiece does, so two
    paths whose real sums differ by a rounding step can tie; Hugging Face's ``tokenizers``
    uses doubles. Ties go to the first candidate seen (earlier start, then shorter piece), as
    in both.

    Where the compiled pass is built (``native``), it segments each text whole, in one
    pass, as sentencepiece does. Without it, ``split`` cuts text into words no piece crosses
    (see :func:`~.spm_segment.word_splitter`) and each word's segmentation is cached
    (``use_cache``); ``use_native = False`` chooses this path where both are there.
    """

    def __init__(self, trie: dict, scores: list[float], unk_id: int, unk_score: float, *,
                 float32_paths: bool, split: Callable[[str], list[str]] | None = None,
                 byte_ids: list[int] | None = None):
        self.trie = trie
        self.scores = scores
        self.unk_id = unk_id
        self.float32_paths = float32_paths
        self.unk_score = self._round(unk_score)
        self._lattice = _lattice(trie, scores)
        self._longest = _depth(trie)  # a walk from a position reads at most this many characters
        self._split = split
        self.use_cache = True  # where the pieces allow it (``_split``)
        self._cache: dict = {}  # text -> Solved, and (text, starting score) -> Solved in place
        self._unit = 2.0 ** -24 if float32_paths else 2.0 ** -53  # the unit roundoff of a sum
        self._largest_step = max((abs(v) for v in scores), default=0.0) + abs(self.unk_score)
        self._byte_ids = byte_ids
        self._native = self._compiled() if native else None
        self.use_native = self._native is not None

    def _compiled(self):
        return native.Lattice(*flatten_trie(self.trie, self.scores), self.unk_id, self.unk_score,
                              self.float32_paths, RESET_AT if self.float32_paths else 0.0, self._byte_ids)

    def __getstate__(self) -> dict:  # the compiled lattice is rebuilt, not pickled
        return {**self.__dict__, "_native": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._use_native = self._use_native and native is not None
        if self._use_native:
            self._native = self._compiled()

    @property
    def use_native(self) -> bool:
        """Whether the compiled pass segments (where it is built; the ids are the same either way)."""
        return self._use_native

    @use_native.setter
    def use_native(self, on: bool) -> None:
        if on and self._native is None:
            raise RuntimeError(NOT_BUILT)
        self._use_native = bool(on)

    def _round(self, value: float) -> float:
        return array("f", [value])[0] if self.float32_paths else value

    def segment(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, id) of each piece of the best segmentation of ``text``."""
        if self._use_native:
            return self._native.segment(text)
        words = self._cached_words(text)
        if words is None:
            return self._viterbi(text, 0.0)[0]
        spans: list[tuple[int, int, int]] = []
        for at, word in self._placed(text, words):
            ends = word[5]
            spans += [(at + a, at + b, i) for a, b, i in zip((0, *ends), ends, word[0])]
        return spans

    def ids(self, text: str) -> list[int] | None:
        """The ids of :meth:`segment`, or None where an unknown character is in the text
        (the compiled pass writes those as sentencepiece does: a run of them one unk id, or
        with ``byte_ids`` each one its bytes' ids; None only for a lone surrogate)."""
        if self._use_native:
            return self._native.ids(text)
        words = self._cached_words(text)
        if words is None:
            ids = [i for _, _, i in self._viterbi(text, 0.0)[0]]
            return None if self.unk_id in ids else ids
        if any(map(_HAS_UNK, words)):
            return None
        if min(map(_ROOM, words), default=1.0) > self._reach(text, words):  # every word as cached
            return list(chain.from_iterable(map(_IDS, words)))
        return [i for _, word in self._placed(text, words) for i in word[0]]

    def _cached_words(self, text: str) -> list[Solved] | None:
        """The segmentation of each word of ``text``, or None where the cache cannot serve:
        it is off, a piece may cross words, or sentencepiece's sums may pass ``RESET_AT``
        (and start again from 0, which only the whole pass replays)."""
        if not (self.use_cache and self._split):
            return None
        words = self._words(text)
        if self.float32_paths and self._reach(text, words) > RESET_AT:
            return None
        return words

    def _words(self, text: str) -> list[Solved]:
        """The segmentation of each word of ``text``, solving (and caching) the new ones."""
        words = self._split(text)
        cache = self._cache
        found = list(map(cache.get, words))
        if None not in found:
            return found
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        for word in words:
            if word not in cache:
                cache[word] = self._solve(word)
        return list(map(cache.__getitem__, words))

    def _reach(self, text: str, words: list[Solved]) -> float:
        """A bound on the magnitude of any path score sentencepiece's sums take over ``text``
        (the real ones and their rounding), inf where rounding could run away."""
        growth = len(text) * self._unit
        if growth > 0.25:
            return math.inf
        return (sum(map(_WEIGHT, words)) + max(map(_EXTENT, words), default=0.0)) * (1 + 4 * growth)

    def _placed(self, text: str, words: list[Solved]) -> list[tuple[int, Solved]]:
        """(offset, segmentation) of each word: the cached one where its room is larger than
        the reach of the text's scores, else the word solved again by sentencepiece's Viterbi
        from the score its sums reach at that word."""
        reach = self._reach(text, words)
        cache = self._cache
        out: list[tuple[int, Solved]] = []
        at = 0
        exact, exact_upto = 0.0, 0  # the path score as sentencepiece sums it, up to out[exact_upto]
        for word in words:
            size = word[5][-1]  # a word is never empty
            if word[2] <= reach:
                exact = self._replay(exact, out[exact_upto:])
                key = (text[at:at + size], exact)
                in_place = cache.get(key)
                if in_place is None:
                    spans, end_score = self._viterbi(key[0], exact)
                    ids, ends = zip(*[(i, b) for _, b, i in spans])
                    in_place = cache[key] = (*self._solved(ids, ends, 0.0, 0.0, 0.0), end_score)
                word, exact, exact_upto = in_place, in_place[-1], len(out) + 1
            out.append((at, word))
            at += size
        return out

    def _replay(self, score: float, words: list[tuple[int, Solved]]) -> float:
        """``score`` plus the piece scores along ``words``, added one by one as the Viterbi adds them."""
        scores, unk_id, unk_score = self.scores, self.unk_id, self.unk_score
        steps = [unk_score if i == unk_id else scores[i] for _, word in words for i in word[0]]
        if not self.float32_paths:
            for step in steps:
                score += step
            return score
        rounded = array("f", [score])
        for step in steps:
            rounded[0] += step
        return rounded[0]

    def _solved(self, ids: tuple[int, ...], ends: tuple[int, ...], weight: float, lead: float,
                extent: float) -> Solved:
        # rounding moves a path's sum by at most (additions x magnitude x unit roundoff), one
        # addition per character at most, so the best path stays best while its lead is
        # wider than twice that; twice again to spare, which also covers the doubles' error
        size = ends[-1]
        room = lead / ((size + 2) * 4 * self._unit) if lead > 0 else 0.0
        return ids, self.unk_id in ids, room, weight, extent, ends, lead

    def _solve(self, text: str) -> Solved:
        """The best segmentation of ``text`` from path score 0, in doubles, and its lead over
        the second best (a forward pass keeping the two best path scores into each position)."""
        n = len(text)
        minus_inf = -math.inf
        best = [0.0] + [minus_inf] * n
        second = [minus_inf] * (n + 1)
        starts = [0] * (n + 1)
        ids = [0] * (n + 1)
        root, unk_id, unk_score, longest = self._lattice, self.unk_id, self.unk_score, self._longest
        for i, char in enumerate(text):
            here, here2 = best[i], second[i]
            entry = root.get(char)
            if entry is None:
                node, piece_id, score = None, unk_id, unk_score
            else:
                node, piece_id, score = entry
                if piece_id < 0:  # no piece of this one character: an unknown one
                    piece_id, score = unk_id, unk_score
            j = i + 1
            # (the same update as in the walk below, unrolled: this loop is the encoder's hot spot)
            candidate = here + score
            top = best[j]
            if candidate > top:
                second[j] = top if top > here2 + score else here2 + score
                best[j], starts[j], ids[j] = candidate, i, piece_id
            elif candidate > second[j]:
                second[j] = candidate
            if not node:
                continue
            for char in text[j:i + longest]:  # the longer pieces from i
                entry = node.get(char)
                if entry is None:
                    break
                j += 1
                node, piece_id, score = entry
                if piece_id >= 0:
                    candidate = here + score
                    top = best[j]
                    if candidate > top:
                        second[j] = top if top > here2 + score else here2 + score
                        best[j], starts[j], ids[j] = candidate, i, piece_id
                    elif candidate > second[j]:
                        second[j] = candidate
                if not node:
                    break
        path, ends = [], []
        end = n
        while end:
            path.append(ids[end])
            ends.append(end)
            end = starts[end]
        path.reverse()
        ends.reverse()
        # a candidate is a best score and one step
        return self._solved(tuple(path), tuple(ends), abs(best[n]), best[n] - second[n],
                            max(map(abs, best)) + self._largest_step)

    def _viterbi(self, text: str, start: float) -> tuple[list[tuple[int, int, int]], float]:
        """sentencepiece's Viterbi pass over ``text`` from path score ``start``: the best
        segmentation and its path score (in float32, relative to where sentencepiece last
        took its sums back to 0, past ``RESET_AT``)."""
        n = len(text)
        if not n:
            return [], start
        minus_inf = -math.inf  # nothing reaches there yet: the first candidate always wins
        best = array("f", [minus_inf]) * (n + 1) if self.float32_paths else [minus_inf] * (n + 1)
        best[0] = start
        rounded = array("f", [0.0]) if self.float32_paths else [0.0]
        starts = [-1] * (n + 1)
        ids = [0] * (n + 1)
        root, unk_id, unk_score, longest = self._lattice, self.unk_id, self.unk_score, self._longest
        reset = self.float32_paths
        frontier = 0  # the farthest position a piece has reached
        for i in range(n):
            here = best[i]
            if reset and (here < -RESET_AT or here > RESET_AT):
                for k in range(i, frontier + 1):
                    best[k] -= here
                here = 0.0
            node = root
            single = False
            for j, char in enumerate(text[i:i + longest], i + 1):
                entry = node.get(char)
                if entry is None:
                    break
                node, piece_id, score = entry
                if piece_id < 0:
                    continue
                if j > frontier:
                    frontier = j
                rounded[0] = score + here
                candidate = rounded[0]
                if candidate > best[j]:
                    best[j] = candidate
                    starts[j] = i
                    ids[j] = piece_id
                if j == i + 1:
                    single = True
            if not single:
                frontier = max(frontier, i + 1)
                rounded[0] = unk_score + here
                candidate = rounded[0]
                if candidate > best[i + 1]:
                    best[i + 1] = candidate
                    starts[i + 1] = i
                    ids[i + 1] = unk_id
        return _backtrack(starts, ids, n), best[n]

    def sample(self, text: str, alpha: float, rng: random.Random) -> list[tuple[int, int, int]]:
        """One segmentation drawn with probability proportional to exp(alpha * score), by
        forward filtering and backward sampling over the lattice (Kudo 2018, nbest_size -1).
        Never cached: each call draws anew."""
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


def _backtrack(starts: list[int], ids: list[int], n: int) -> list[tuple[int, int, int]]:
    spans = []
    end = n
    while end > 0:
        start = starts[end]
        spans.append((start, end, ids[end]))
        end = start
    spans.reverse()
    return spans
