"""Training SentencePiece models from text: Unigram (Kudo 2018: seed pieces, EM, pruning) and
BPE (merges by frequency, scored by merge order), over text normalised as the model will be.

Unigram, as sentencepiece trains it: the seed pieces are the frequent substrings of words
(ranked by frequency x length), with every character that the coverage keeps; each round
runs EM twice (expected piece counts by forward-backward over each word's lattice, then
log-probabilities with the Bayesian digamma update) and prunes the pieces whose removal
costs the corpus likelihood least, keeping 3/4, until the vocabulary is 10 % over its size;
the final vocabulary is the best-scoring pieces. Ids are not sentencepiece's (the corpus
statistics and the order of equal scores differ), the vocabulary's quality is what we match.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Callable, Iterable

from .spm_normalize import SPACE
from .spm_segment import UNK_PENALTY, build_trie

_END = ""
_DIGIT_RUNS = re.compile(r"\d|\D+")  # with split_digits, BPE merges never join a digit


def _char_class(char: str) -> str:
    """A piece keeps to one class, which stands in for the Unicode script sentencepiece
    checks: the first word of the character's name (LATIN, CYRILLIC...; Han, Hiragana and
    Katakana as one, as sentencepiece joins them), and "common" for punctuation, symbols and
    ASCII digits (script Common, so ``3.7`` and ``=1)`` are pieces)."""
    if "0" <= char <= "9" or not (char.isalnum() or unicodedata.category(char)[0] == "M"):
        return "common"
    script = unicodedata.name(char, "").split(" ", 1)[0]
    return "han" if script in ("CJK", "HIRAGANA", "KATAKANA") else script


def split_words(sentence: str) -> list[str]:
    """Normalized text cut before each ``▁``: the units pieces never cross."""
    words, start = [], 0
    for k in range(1, len(sentence)):
        if sentence[k] == SPACE:
            words.append(sentence[start:k])
            start = k
    if sentence:
        words.append(sentence[start:])
    return words


class _Validity:
    def __init__(self, split_digits: bool, max_length: int):
        self.split_digits = split_digits
        self.max_length = max_length
        self._classes: dict[str, str] = {}

    def cls(self, char: str) -> str:
        found = self._classes.get(char)
        if found is None:
            found = self._classes[char] = _char_class(char)
        return found

    def substrings(self, word: str) -> Iterable[str]:
        """The valid pieces of two or more characters inside ``word``."""
        n = len(word)
        for i in range(n):
            first = word[i]
            if first == SPACE and i:
                continue
            body = i + 1 if first == SPACE else i  # a leading ▁ joins any class
            for j in range(i + 2, min(n, i + self.max_length) + 1):
                last = word[j - 1]
                if last == SPACE:
                    break
                if j - 1 > body and self.cls(last) != self.cls(word[body]):
                    break
                if self.split_digits and any("0" <= c <= "9" for c in word[i:j]):
                    break
                yield word[i:j]


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    top = max(a, b)
    return top + math.log1p(math.exp(-abs(a - b)))


def _digamma(x: float) -> float:
    result = 0.0
    while x < 7:
        result -= 1 / x
        x += 1
    x -= 0.5
    xx = 1 / (x * x)
    return result + math.log(x) + xx * (1 / 24 + xx * (-7 / 960 + xx * (31 / 8064 - xx * 127 / 30720)))


def train_unigram(words: Counter[str], vocab_size: int, *, character_coverage: float = 0.9995,
                  split_digits: bool = False, max_piece_length: int = 16, seed_size: int = 1_000_000,
                  shrinking_factor: float = 0.75, sub_iterations: int = 2,
                  progress: Callable[[int, int], None] | None = None) -> list[tuple[str, float]]:
    """(piece, score) best first, ``vocab_size`` of them at most (the required characters
    always among them)."""
    validity = _Validity(split_digits, max_piece_length)
    chars: Counter[str] = Counter()
    for word, count in words.items():
        for char in word:
            chars[char] += count
    total_chars = sum(chars.values())
    required: list[str] = []
    covered = 0
    for char, count in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        if required and covered / total_chars >= character_coverage:
            break
        required.append(char)
        covered += count
    required_set = set(required)

    # seeds: the substrings of words seen at least twice, by frequency x length
    occurrences: Counter[str] = Counter()
    for word, count in words.items():
        for piece in validity.substrings(word):
            occurrences[piece] += count
    seeds = sorted(((c * len(p), p) for p, c in occurrences.items() if c > 1 and all(ch in required_set for ch in p)),
                   reverse=True)[:max(seed_size - len(required), 0)]
    pieces: dict[str, float] = {c: float(chars[c]) for c in required}
    pieces.update((p, float(score)) for score, p in seeds)
    scores = _log_probs(pieces)

    desired = int(vocab_size * 1.1)
    rounds = 0
    while True:
        for _ in range(sub_iterations):
            expected = _expected_counts(scores, words)
            scores = _digamma_scores({p: f for p, f in expected.items() if f >= 0.5})
            floor = min(scores.values(), default=0.0) - 1.0  # a required character no path uses
            for char in required:
                scores.setdefault(char, floor)
        rounds += 1
        if progress:
            progress(rounds, rounds + 1)
        if len(scores) <= desired:
            break
        scores = _prune(scores, words, required_set, max(desired, int(len(scores) * shrinking_factor)))
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    final = [p for p, _ in best if p in required_set]
    final += [p for p, _ in best if p not in required_set][:max(vocab_size - len(final), 0)]
    return sorted(((p, _on_grid(scores[p])) for p in final), key=lambda kv: (-kv[1], kv[0]))


SCORE_GRID = 2.0 ** -7


def _on_grid(score: float) -> float:
    """``score`` to the nearest multiple of 1/128 (at most 0.004 away). Path scores, sums of
    these, are then exact in float32 below 2^17 in magnitude (sentencepiece takes its sums
    back to 0 past 10^5) and in doubles, so sentencepiece (float32), Hugging Face (doubles,
    words split first or not) and modkit reach the same comparisons, exact ties included,
    and give the same ids for the model on any text."""
    return round(score / SCORE_GRID) * SCORE_GRID


def _log_probs(freqs: dict[str, float]) -> dict[str, float]:
    total = math.log(sum(freqs.values()) or 1.0)
    return {p: math.log(f) - total if f > 0 else -1e9 for p, f in freqs.items()}


def _digamma_scores(freqs: dict[str, float]) -> dict[str, float]:
    total = _digamma(sum(freqs.values()) + 1e-9)
    return {p: _digamma(f + 1e-9) - total for p, f in freqs.items()}


def _edges(trie: dict, word: str) -> list[list[tuple[int, str]]]:
    """For each start, the (end, piece) of the pieces there."""
    out = []
    n = len(word)
    for i in range(n):
        here, node, j = [], trie, i
        while j < n:
            node = node.get(word[j])
            if node is None:
                break
            j += 1
            if _END in node:
                here.append((j, node[_END]))
        out.append(here)
    return out


def _expected_counts(scores: dict[str, float], words: Counter[str]) -> dict[str, float]:
    """Expected count of each piece over the corpus (forward-backward on each word)."""
    trie = build_trie((p, p) for p in scores)
    unk = min(scores.values()) - UNK_PENALTY
    expected = dict.fromkeys(scores, 0.0)
    for word, count in words.items():
        n = len(word)
        edges = _edges(trie, word)
        alpha = [-math.inf] * (n + 1)
        alpha[0] = 0.0
        for i in range(n):
            if alpha[i] == -math.inf:
                continue
            here = edges[i] or [(i + 1, None)]
            for j, piece in here:
                alpha[j] = _logsumexp(alpha[j], alpha[i] + (scores[piece] if piece else unk))
        beta = [-math.inf] * (n + 1)
        beta[n] = 0.0
        for i in range(n - 1, -1, -1):
            for j, piece in edges[i] or [(i + 1, None)]:
                beta[i] = _logsumexp(beta[i], beta[j] + (scores[piece] if piece else unk))
        z = alpha[n]
        for i in range(n):
            for j, piece in edges[i]:
                expected[piece] += count * math.exp(alpha[i] + scores[piece] + beta[j] - z)
    return expected


def _prune(scores: dict[str, float], words: Counter[str], required: set[str], keep: int) -> dict[str, float]:
    """Keep the ``keep`` pieces whose removal would cost the likelihood most, estimated as
    sentencepiece does: each piece's Viterbi count moves to the best segmentation of its own
    text without it, weighted by the share of words that use it."""
    trie = build_trie((p, p) for p in scores)
    freqs: Counter[str] = Counter()  # Viterbi counts
    users: Counter[str] = Counter()  # words (with their counts) whose segmentation uses the piece
    for word, count in words.items():
        used = _best_without(trie, scores, word, exclude_whole=False)
        for piece in used:
            freqs[piece] += count
        for piece in set(used):
            users[piece] += count
    total = sum(freqs.values())
    all_words = sum(words.values())
    kept = {p for p in scores if p in required or len(p) == 1}  # nothing else could stand in for them
    losses = []
    for piece in scores:
        f = freqs.get(piece, 0)
        if piece in kept or f <= 0 or len(_best_without(trie, scores, piece, exclude_whole=False)) > 1:
            continue  # unused, or its own text is better cut otherwise: it goes
        alternatives = _best_without(trie, scores, piece)
        logsum_alt = math.log(total + f * (len(alternatives) - 1))
        logprob_alt = sum(math.log(freqs.get(a, 0) + f) - logsum_alt for a in alternatives)
        share = users[piece] / all_words
        losses.append((share * (math.log(f) - math.log(total) - logprob_alt), piece))
    losses.sort(reverse=True)
    for _, piece in losses:
        if len(kept) >= keep:
            break
        kept.add(piece)
    return {p: s for p, s in scores.items() if p in kept}


def _best_without(trie: dict, scores: dict[str, float], piece: str, exclude_whole: bool = True) -> list[str]:
    """The best segmentation of ``piece``'s text (Viterbi), without the piece itself when
    ``exclude_whole``."""
    n = len(piece)
    edges = _edges(trie, piece)
    if exclude_whole:
        edges[0] = [(j, p) for j, p in edges[0] if j != n]
    best = [-math.inf] * (n + 1)
    back: list[tuple[int, str]] = [(0, "")] * (n + 1)
    best[0] = 0.0
    for i in range(n):
        if best[i] == -math.inf:
            continue
        for j, p in edges[i] or [(i + 1, piece[i])]:
            candidate = best[i] + scores.get(p, -1e9)
            if candidate > best[j]:
                best[j], back[j] = candidate, (i, p)
    out, end = [], n
    while end > 0:
        start, p = back[end]
        out.append(p)
        end = start
    return out[::-1]


def train_model(files, options, progress=None):
    """A ModelProto trained from text files with SentencePieceOptions."""
    from .bpe_train import learn_merges
    from .sentencepiece import PIECES
    from .spm_charsmap import charsmap_for
    from .spm_normalize import Normalizer
    from .spm_proto import (BPE, BYTE, CONTROL, NORMAL, UNIGRAM, UNKNOWN, USER_DEFINED, ModelProto,
                            NormalizerSpec, TrainerSpec)

    normalizer = NormalizerSpec(name=options.normalization if options.normalization == "identity"
                                else f"modkit_{options.normalization}",
                                precompiled_charsmap=charsmap_for(options.normalization),
                                add_dummy_prefix=options.add_dummy_prefix,
                                remove_extra_whitespaces=options.remove_extra_whitespaces)
    user_defined = list(dict.fromkeys(options.user_defined_symbols))
    normalize = Normalizer(normalizer, user_defined).normalize
    words: Counter[str] = Counter()
    user = set(user_defined)
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as f:
            for line, repeats in Counter(f).items():
                for word in split_words(normalize(line.rstrip("\n"))):
                    if word not in user:
                        words[word] += repeats
    ids = {role: i for role, i in options.special_ids.items() if i >= 0}
    meta: list[tuple[str, float, int]] = [None] * len(ids)  # type: ignore[list-item]
    for role, i in ids.items():
        meta[i] = (PIECES[role], 0.0, UNKNOWN if role == "unk" else CONTROL)
    meta += [(s, 0.0, CONTROL) for s in dict.fromkeys(options.control_symbols)]
    meta += [(s, 0.0, USER_DEFINED) for s in user_defined]
    if options.byte_fallback:
        meta += [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    budget = options.vocab_size - len(meta) - options.extra_ids
    if budget < 1:
        raise ValueError(f"vocab_size {options.vocab_size} leaves no room for pieces after {len(meta)} special "
                         f"and byte pieces and {options.extra_ids} sentinels")
    taken = {p for p, _, _ in meta}
    if options.model_type == "unigram":
        trained = train_unigram(words, budget, character_coverage=options.character_coverage,
                                split_digits=options.split_digits, max_piece_length=options.max_piece_length,
                                progress=progress)
        pieces = [(p, s, NORMAL) for p, s in trained if p not in taken]
        model_type = UNIGRAM
    else:
        seqs: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            for part in _DIGIT_RUNS.findall(word) if options.split_digits else [word]:
                seqs[tuple(part)] += count
        tokens, _ = learn_merges(seqs, [], budget, 2, progress)
        chars = [t for t in tokens if len(t) == 1]
        merged = [t for t in tokens if len(t) > 1]
        pieces = [(p, -float(i), NORMAL) for i, p in enumerate(merged + chars) if p not in taken]
        model_type = BPE
    trainer = TrainerSpec(model_type=model_type, vocab_size=len(meta) + len(pieces), split_digits=options.split_digits,
                          byte_fallback=options.byte_fallback, max_sentencepiece_length=options.max_piece_length,
                          **{f"{role}_id": options.special_ids.get(role, -1) for role in PIECES})
    return ModelProto(meta + pieces, trainer, normalizer)
