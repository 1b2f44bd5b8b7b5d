"""`modkit probe` end to end: load, encode, cache activations, train the probes, analyse heads."""
from __future__ import annotations

import sys
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import numpy as np
import torch

import modkit
from modkit.errors import UserError
from modkit_plugins.analysis.probe_heads import HeadStats
from modkit_plugins.analysis.probe_inputs import (ActivationCache, build_inputs, cache_key, is_punctuation,
                                                  read_tasks, read_trees)
from modkit_plugins.analysis.probe_train import span_data, train_probe


@dataclass
class ProbeSettings:
    tasks: list[str] | None = None
    pooling: str = "attention"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    max_tokens: int = 128
    max_targets: int = 4000  # training targets per task; the test split gets a quarter as many
    max_span_width: int = 128  # tokens pooled per span; longer spans keep their first ones
    attention_sentences: int = 300
    min_relation_count: int = 20
    test_fraction: float = 0.2
    seed: int = 0


@contextmanager
def _progress(enabled: bool, label: str, total: int):
    if not enabled:
        yield lambda n=1: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield lambda n=1: bar.update(n)


def _is_test(sentence: int, seed: int, fraction: float) -> bool:
    """A stable split by sentence, so no sentence feeds both sides."""
    return (zlib.crc32(f"{seed}:{sentence}".encode()) % 1000) < fraction * 1000


def _split(targets, settings: ProbeSettings):
    """Train and test targets, sampled by whole sentences (in a seeded random order) up to the
    caps, so that few sentences need the model."""
    by_sentence: dict[int, list] = {}
    for t in targets:
        by_sentence.setdefault(t.sentence, []).append(t)
    order = np.random.default_rng(settings.seed).permutation(sorted(by_sentence))
    train, test = [], []
    for s in order:
        side, cap = ((test, max(settings.max_targets // 4, 1)) if _is_test(int(s), settings.seed, settings.test_fraction)
                     else (train, settings.max_targets))
        if len(side) < cap:
            side += by_sentence[int(s)][:cap - len(side)]
    return train, test


def _backbone(model_path: Path):
    model = modkit.load_model(model_path)
    backbone = getattr(model, "backbone", model)
    if getattr(backbone, "is_encoder_decoder", False):
        raise UserError(f"{model_path}: probing encoder-decoders is not supported yet (only encoders and decoders)")
    return backbone.eval().requires_grad_(False), modkit.load_tokenizer(model_path)


def _forward(backbone, sentences, *, attentions: bool):
    """One padded batch through the model: (hidden states (L+1, B, T, D), attentions or None)."""
    t = max(len(s.ids) for s in sentences)
    ids = torch.zeros(len(sentences), t, dtype=torch.long)
    mask = torch.zeros(len(sentences), t, dtype=torch.long)
    for i, s in enumerate(sentences):
        ids[i, :len(s.ids)] = torch.tensor(s.ids)
        mask[i, :len(s.ids)] = 1
    with torch.no_grad():
        out = backbone(ids, mask, output_hidden_states=True, output_attentions=attentions)
    attn = torch.stack(out.attentions, 1).numpy() if attentions else None
    return torch.stack(out.hidden_states).numpy(), attn


def _batches(indices: list[int], sentences, size: int):
    order = sorted(indices, key=lambda i: len(sentences[i].ids))
    for start in range(0, len(order), size):
        yield order[start:start + size]


def run_probe(model_path: Path, task_data: Path, report_dir: Path, settings: ProbeSettings, *,
              progress: bool = True, echo: Callable[[str], None] = lambda m: click.echo(m, err=True)) -> dict:
    backbone, tokenizer = _backbone(model_path)
    tasks = read_tasks(task_data, settings.tasks)
    trees = read_trees(task_data)
    sentences, targets, tree_ids = build_inputs(tokenizer, tasks, trees, settings.max_tokens)
    splits = {name: _split(ts, settings) for name, ts in targets.items()}
    for name, (train, test) in splits.items():
        if not train or not test:
            raise UserError(f"task {name}: too few targets to train and test a probe ({len(train)} / {len(test)})")

    # every sentence some kept target needs gets rows in the activation cache
    needed = sorted({t.sentence for tr, te in splits.values() for t in tr + te})
    offset = 0
    for i in needed:
        sentences[i].offset, offset = offset, offset + len(sentences[i].ids)
    n_layers = len(_forward(backbone, [sentences[needed[0]]], attentions=False)[0])
    cache = ActivationCache(report_dir / "cache", cache_key(model_path, [sentences[i] for i in needed]))
    if cache.exists():
        echo(f"activations: reusing {cache.path}")
    else:
        array = cache.create((n_layers, offset, backbone.d_model))
        with _progress(progress, "activations", len(needed)) as tick:
            for batch in _batches(needed, sentences, 32):
                hidden, _ = _forward(backbone, [sentences[i] for i in batch], attentions=False)
                for b, i in enumerate(batch):
                    s = sentences[i]
                    array[:, s.offset:s.offset + len(s.ids)] = hidden[:, b, :len(s.ids)]
                tick(len(batch))
        cache.finish(array)
    activations = cache.open()

    report = {"model": str(model_path), "layers": n_layers - 1, "d_model": backbone.d_model,
              "settings": vars(settings), "tasks": {}}
    with _progress(progress, "probes", len(splits) * n_layers * settings.epochs) as tick:
        for name, (train, test) in splits.items():
            report["tasks"][name] = _probe_task(activations, sentences, train, test, n_layers, backbone.d_model,
                                                settings, tick)
    report["attention"] = _heads(backbone, sentences, tree_ids, trees, targets, settings, progress)
    return report


def _probe_task(activations, sentences, train, test, n_layers, d_model, settings, tick) -> dict:
    labels = sorted({t.label for t in train + test})
    ids = {label: i for i, label in enumerate(labels)}
    tr = span_data(train, sentences, ids, settings.max_span_width)
    te = span_data(test, sentences, ids, settings.max_span_width)
    cumulative, mix = [], None
    for layers in range(1, n_layers + 1):  # P^(0) .. P^(L): mixes of layers 0..ℓ
        result, weights, gamma = train_probe(
            activations, tr, te, layers, d_model, len(labels), pooling=settings.pooling, epochs=settings.epochs,
            batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, tick=tick)
        cumulative.append(result)
        if layers == n_layers:  # the mix over every layer gives the mixing weights
            mix = {"weights": weights, "gamma": gamma, **result}
    score = [c["accuracy"] for c in cumulative]
    delta = [score[l] - score[l - 1] for l in range(1, n_layers)]
    expected = (sum(l * d for l, d in enumerate(delta, 1)) / sum(delta)) if sum(delta) > 0 else None
    majority = max(np.bincount(te.labels, minlength=len(labels))) / len(te.labels)
    return {"labels": labels, "train_targets": len(train), "test_targets": len(test),
            "two_spans": len(tr.rows) == 2, "majority_baseline": float(majority), "mix": mix,
            "centre_of_gravity": float(sum(l * w for l, w in enumerate(mix["weights"]))),
            "cumulative": cumulative, "delta": delta, "expected_layer": expected}


def _heads(backbone, sentences, tree_ids, trees, targets, settings, progress) -> dict:
    """Clark et al.'s statistics on the trees' sentences, then the tasks' up to the limit."""
    task_sentences = (t.sentence for ts in targets.values() for t in ts)
    chosen = list(dict.fromkeys([*tree_ids, *task_sentences]))[:settings.attention_sentences]
    tree_of = {}
    for i, tree in zip(tree_ids, trees):
        tree_of.setdefault(i, tree)
    stats = None
    with _progress(progress, "attention", len(chosen)) as tick:
        for batch in _batches(chosen, sentences, 16):
            _, attn = _forward(backbone, [sentences[i] for i in batch], attentions=True)
            if stats is None:
                stats = HeadStats(attn.shape[1], attn.shape[2], causal=bool(getattr(backbone, "is_decoder", False)))
            for b, i in enumerate(batch):
                s = sentences[i]
                t = len(s.ids)
                a = attn[b, :, :, :t, :t].astype(np.float64)
                punct = [p for w, (x, y) in zip(s.words, s.word_tokens) if is_punctuation(w) for p in range(x, y)]
                stats.add(a, s, punct)
                if i in tree_of:
                    stats.add_tree(a, s, tree_of[i]["heads"], tree_of[i]["deprels"])
            tick(len(batch))
    return {"sentences": len(chosen), **stats.summary(settings.min_relation_count)}
