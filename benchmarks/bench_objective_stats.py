"""Statistics of 10^5 previewed training examples per objective against its definition, and
how long `modkit.preview` takes to draw them (shared 2-core machine: timings are noisy).

Run: python benchmarks/bench_objective_stats.py [N]
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import modkit

ROOT = Path(__file__).resolve().parents[1]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


SPEEDS: list[str] = []


def draw(spec: str, *overrides: str, stage: int = 0) -> tuple[list[dict], float]:
    """N examples of each objective of the stage; the time to draw them, setting up (training
    the tokenizer, reading and tokenizing the data) apart, is recorded in SPEEDS."""
    start = time.perf_counter()
    stream = modkit.preview(ROOT / spec, stage=stage, n=N, overrides=list(overrides), texts=False)
    records = [next(stream)]
    ready = time.perf_counter()
    records += stream
    end = time.perf_counter()
    SPEEDS.append(f"| {spec.split('/')[1]} {' '.join(overrides)} | {len(records):,} | {ready - start:.1f} s | "
                  f"{end - ready:.1f} s | {len(records) / (end - ready):,.0f} |")
    return records, end - start


def mlm_and_nsp() -> None:
    records, seconds = draw("examples/tiny-bert/spec.toml", "stages[0].seq_len=128")
    mlm = [r for r in records if r["objective"] == "mlm"]
    nsp = [r for r in records if r["objective"] == "nsp"]
    maskable = chosen = masked = kept = 0
    mask_id = Counter(i for r in mlm[:200] for i, l in zip(r["input_ids"], r["labels"]) if l != -100
                      and i != l).most_common(1)[0][0]
    for r in mlm:
        maskable += len(r["input_ids"]) - 2  # [CLS] and [SEP] are never chosen
        for i, label in zip(r["input_ids"], r["labels"]):
            if label != -100:
                chosen += 1
                masked += i == mask_id
                kept += i == label
    print(f"mlm  ({len(mlm)} windows of 128 tokens, with nsp: {seconds:.1f} s for {len(records)} examples): "
          f"chosen {chosen / maskable:.4f} of the non-special tokens (0.15); of those mask {masked / chosen:.4f} (0.8), "
          f"random {(chosen - masked - kept) / chosen:.4f} (0.1), kept {kept / chosen:.4f} (0.1)")
    not_next = sum(r["next_sentence_label"] for r in nsp) / len(nsp)
    print(f"nsp  ({len(nsp)} pairs): NotNext {not_next:.4f} (0.5)")


def spans() -> None:
    records, seconds = draw("examples/tiny-t5-spans/spec.toml", "stages[0].seq_len=128")
    sentinel = lambda t: t >= 1000  # noqa: E731 (ids past the tokenizer's 1,000 tokens)
    noise = total = n_spans = exact = 0
    for r in records:
        target, inputs = r["labels"], r["input_ids"]
        spans_here = sum(map(sentinel, inputs))
        n_spans += spans_here
        noise += len(target) - spans_here - 2  # minus the sentinels, the final sentinel and eos
        total += len(r["original_ids"])
        pieces, k = {}, None
        for t in target[:-1]:
            if sentinel(t):
                k = t
                pieces[k] = []
            else:
                pieces[k].append(t)
        rebuilt = [x for t in inputs[:-1] for x in (pieces[t] if sentinel(t) else [t])]
        exact += rebuilt == r["original_ids"]
    print(f"span-corruption ({len(records)} inputs of {len(records[0]['input_ids'])} tokens, {seconds:.1f} s): "
          f"noise density {noise / total:.4f} (0.15), mean span {noise / n_spans:.3f} (3), "
          f"original recovered from input + target {exact}/{len(records)}")


def denoise() -> None:
    records, seconds = draw("examples/tiny-bart-denoise/spec.toml", "stages[0].seq_len=128")
    mask_id = 1  # <mask>: bpe numbers the special tokens in sorted order (</s> <mask> <pad> <s>)
    removed = total = masks = 0
    for r in records:
        n_masks = r["input_ids"].count(mask_id)
        kept = len(r["input_ids"]) - 1 - n_masks
        removed += len(r["original_ids"]) - kept
        total += len(r["original_ids"])
        masks += n_masks
    print(f"denoise ({len(records)} examples up to 128 tokens, {seconds:.1f} s): masked fraction {removed / total:.4f} "
          f"(ceil(0.3 n) / n), tokens per mask {removed / masks:.3f}")
    from modkit_plugins.objectives.noising import text_infilling
    import torch

    g = torch.Generator().manual_seed(0)
    lengths = []
    for _ in range(N // 100):
        lengths += text_infilling(list(range(1, 1001)), 0.3, 3.0, 0, g)[1][:-1]
    mean = sum(lengths) / len(lengths)
    var = sum((x - mean) ** 2 for x in lengths) / len(lengths)
    print(f"denoise text infilling over {len(lengths)} spans of 1,000-token texts: span length mean {mean:.3f}, "
          f"variance {var:.3f} (Poisson(3): 3 and 3)")
    perm, _ = draw("examples/tiny-bart-denoise/spec.toml", "stages[0].objective.text_infilling=0",
                   "stages[0].objective.document_rotation=1.0")
    same = sum(Counter(r["input_ids"][:-1]) == Counter(r["original_ids"]) for r in perm)
    moved = sum(r["input_ids"][:-1] != r["original_ids"] for r in perm)
    print(f"denoise permutation + rotation only: tokens preserved in {same}/{len(perm)}, order changed in {moved}")


if __name__ == "__main__":
    mlm_and_nsp()
    spans()
    denoise()
    print("\n| preview of | examples | setting up | drawing | examples/s drawn |\n|---|---|---|---|---|")
    print("\n".join(SPEEDS))
