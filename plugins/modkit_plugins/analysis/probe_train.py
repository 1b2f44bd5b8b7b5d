"""Edge probing (Tenney et al. 2019, "BERT Rediscovers the Classical NLP Pipeline").

A probe reads the frozen activations of layers 0..ℓ through a scalar mix
h = γ · Σ_k softmax(s)_k · h^(k), projects it, pools each span (self-attentive: a learned
score per token, softmax over the span; or the mean), and classifies with a small MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class ScalarMix(nn.Module):
    def __init__(self, layers: int):
        super().__init__()
        self.s = nn.Parameter(torch.zeros(layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.s, 0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (layers, ...) -> (...)
        return self.gamma * torch.einsum("l,l...->...", self.weights(), h)


class SpanPool(nn.Module):
    """Pools (B, W, D) span tokens with a mask (B, W) into (B, D)."""

    def __init__(self, d: int, mode: str):
        super().__init__()
        self.mode = mode
        self.score = nn.Linear(d, 1) if mode == "attention" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.score is None:
            return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        logits = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.einsum("bw,bwd->bd", torch.softmax(logits, -1), x)


class EdgeProbe(nn.Module):
    def __init__(self, layers: int, d_model: int, n_spans: int, n_labels: int, pooling: str,
                 hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.mix = ScalarMix(layers)
        self.proj = nn.ModuleList(nn.Linear(d_model, hidden) for _ in range(n_spans))
        self.pool = nn.ModuleList(SpanPool(hidden, pooling) for _ in range(n_spans))
        self.mlp = nn.Sequential(nn.Linear(hidden * n_spans, hidden), nn.Tanh(), nn.LayerNorm(hidden),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_labels))

    def forward(self, spans: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``spans``: per span, (layers, B, W, D) activations and a (B, W) mask."""
        pooled = [pool(proj(self.mix(x)), mask) for (x, mask), proj, pool in zip(spans, self.proj, self.pool)]
        return self.mlp(torch.cat(pooled, -1))


@dataclass
class SpanData:
    """Token rows of every target's spans in the activation cache, padded to one width."""

    rows: list[np.ndarray]  # per span: (N, W) cache rows, -1 = padding
    labels: np.ndarray  # (N,) label ids

    def batch(self, cache: np.ndarray, idx: np.ndarray, layers: int):
        out = []
        for rows in self.rows:
            r = rows[idx]
            r = r[:, :max(int((r >= 0).sum(1).max()), 1)]  # no wider than this batch's widest span
            mask = r >= 0
            x = np.asarray(cache[:layers, np.where(mask, r, 0).ravel()], dtype=np.float32)
            out.append((torch.from_numpy(x.reshape(layers, *r.shape, -1)), torch.from_numpy(mask)))
        return out, torch.from_numpy(self.labels[idx])


def span_data(targets, sentences, label_ids: dict[str, int], max_width: int) -> SpanData:
    n_spans = len(targets[0].spans)
    rows = [np.full((len(targets), max_width), -1, dtype=np.int64) for _ in range(n_spans)]
    for i, t in enumerate(targets):
        base = sentences[t.sentence].offset
        for k, (a, b) in enumerate(t.spans):
            width = min(b - a, max_width)  # long spans keep their first max_width tokens
            rows[k][i, :width] = np.arange(base + a, base + a + width)
    return SpanData(rows, np.array([label_ids[t.label] for t in targets], dtype=np.int64))


def scores(pred: np.ndarray, gold: np.ndarray, n_labels: int) -> dict[str, float]:
    """Accuracy (= micro F1 for one label per target) and macro F1 over the labels seen."""
    f1s = []
    for c in range(n_labels):
        tp = np.sum((pred == c) & (gold == c))
        support, predicted = np.sum(gold == c), np.sum(pred == c)
        if support or predicted:
            f1s.append(2 * tp / (support + predicted))
    return {"accuracy": float(np.mean(pred == gold)), "macro_f1": float(np.mean(f1s)) if f1s else 0.0}


def train_probe(cache, train: SpanData, test: SpanData, layers: int, d_model: int, n_labels: int, *,
                pooling: str, epochs: int, batch_size: int, lr: float, seed: int, tick=None):
    """Train one probe on layers 0..layers-1; return (test scores, mixing weights, gamma)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    probe = EdgeProbe(layers, d_model, len(train.rows), n_labels, pooling)
    # The mix's few weights learn 10x faster: a handful of epochs on 2 cores, not Tenney's
    # training to convergence, must still move them off uniform.
    mix = list(probe.mix.parameters())
    rest = [p for p in probe.parameters() if all(p is not m for m in mix)]
    opt = torch.optim.Adam([{"params": rest}, {"params": mix, "lr": 10 * lr}], lr=lr)
    for _ in range(epochs):
        probe.train()
        order = rng.permutation(len(train.labels))
        for start in range(0, len(order), batch_size):
            spans, labels = train.batch(cache, order[start:start + batch_size], layers)
            loss = nn.functional.cross_entropy(probe(spans), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if tick:
            tick()
    probe.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(test.labels), 512):
            spans, _ = test.batch(cache, np.arange(start, min(start + 512, len(test.labels))), layers)
            preds.append(probe(spans).argmax(-1).numpy())
    result = scores(np.concatenate(preds), test.labels, n_labels)
    return result, probe.mix.weights().detach().tolist(), float(probe.mix.gamma.detach())
