"""Attention-head statistics after Clark et al. (2019), "What Does BERT Look At?", in numpy.

Per layer and head: the mean entropy of each token's attention (and that of uniform attention
over the same keys), and the mean share of attention each token gives to ``[CLS]``, ``[SEP]``,
punctuation and the previous and next token. With dependency trees: for each relation, how
often each head's most-attended other word is the word's syntactic head (dependent -> head) or
its dependent (head -> dependent), against the best fixed-offset baseline.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

STATS = ("entropy", "uniform_entropy", "cls", "sep", "punctuation", "previous", "next")
CLS_ROLES, SEP_ROLES = ("cls", "bos"), ("sep", "eos")


class HeadStats:
    def __init__(self, layers: int, heads: int, causal: bool):
        self.causal = causal
        self.sums = {k: np.zeros((layers, heads)) for k in STATS}
        self.counts = Counter()
        self.correct: dict[tuple[str, str], np.ndarray] = {}  # (relation, direction) -> (L, H) hits
        self.relation_total = Counter()
        self.offsets: dict[str, Counter] = defaultdict(Counter)

    def add(self, attn: np.ndarray, sentence, punct_tokens: list[int]) -> None:
        """``attn``: (layers, heads, T, T) attention of one sentence's real tokens."""
        t = attn.shape[-1]
        logs = np.log(np.clip(attn, 1e-12, None))
        self.sums["entropy"] += -(attn * logs).sum(-1).sum(-1)
        keys = np.arange(1, t + 1) if self.causal else np.full(t, t)
        self.sums["uniform_entropy"] += np.log(keys).sum()
        self.counts["tokens"] += t
        for stat, roles in (("cls", CLS_ROLES), ("sep", SEP_ROLES)):
            cols = [p for r in roles for p in sentence.specials.get(r, [])]
            if cols:
                self.sums[stat] += attn[..., cols].sum(-1).sum(-1)
        if punct_tokens:
            self.sums["punctuation"] += attn[..., punct_tokens].sum(-1).sum(-1)
        if t > 1:
            i = np.arange(1, t)
            self.sums["previous"] += attn[..., i, i - 1].sum(-1)
            self.sums["next"] += attn[..., i - 1, i].sum(-1)
            self.counts["pairs"] += t - 1

    def add_tree(self, attn: np.ndarray, sentence, heads: list[int], deprels: list[str]) -> None:
        """Word-level attention (from a word: mean over its tokens; to a word: sum over its
        tokens; special tokens left out), then each head's guess for every dependency."""
        spans = sentence.word_tokens
        kept = [i for i, (a, b) in enumerate(spans) if b > a]
        if len(kept) < 2:
            return
        rows = np.stack([attn[:, :, a:b, :].mean(2) for a, b in (spans[i] for i in kept)], 2)
        words = np.stack([rows[..., a:b].sum(-1) for a, b in (spans[i] for i in kept)], -1)  # (L, H, n, n)
        n = len(kept)
        words[..., np.arange(n), np.arange(n)] = -np.inf  # a word's own tokens are not a guess
        guess = words.argmax(-1)  # (L, H, n): most-attended other word
        where = {w: k for k, w in enumerate(kept)}
        for dep, (head, rel) in enumerate(zip(heads, deprels)):
            if head <= 0 or dep not in where or head - 1 not in where:
                continue
            d, h = where[dep], where[head - 1]
            self.relation_total[rel] += 1
            self.offsets[rel][(head - 1) - dep] += 1
            for direction, (src, dst) in (("dependent->head", (d, h)), ("head->dependent", (h, d))):
                hits = self.correct.setdefault((rel, direction), np.zeros(guess.shape[:2]))
                hits += guess[..., src] == dst

    def summary(self, min_count: int) -> dict:
        n, pairs = max(self.counts["tokens"], 1), max(self.counts["pairs"], 1)
        out = {k: (self.sums[k] / (pairs if k in ("previous", "next") else n)).tolist() for k in STATS}
        relations = {}
        for rel, total in self.relation_total.most_common():
            if total < min_count:
                continue
            best = None
            for direction in ("dependent->head", "head->dependent"):
                acc = self.correct[(rel, direction)] / total
                layer, head = np.unravel_index(acc.argmax(), acc.shape)
                if best is None or acc[layer, head] > best["accuracy"]:
                    best = {"layer": int(layer) + 1, "head": int(head) + 1, "direction": direction,
                            "accuracy": float(acc[layer, head])}
            offset, hits = self.offsets[rel].most_common(1)[0]
            relations[rel] = {"count": total, "best_head": best,
                              "baseline": {"offset": offset, "accuracy": hits / total},
                              "accuracy_by_head": (self.correct[(rel, best["direction"])] / total).tolist()}
        out["relations"] = relations
        out["sentences_tokens"] = self.counts["tokens"]
        return out
