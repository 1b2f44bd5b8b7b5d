"""Encoder-decoders side by side with transformers: same weights, same threads, one run.

    python benchmarks/bench_encdec.py [--threads 2] [--reps 5]

Prints a markdown table of seconds and ratios (modkit / reference; below 1 is faster) for
the bart-base and t5-small shapes with random weights: forward, training step, greedy
generation of 64 tokens (with and without modkit's cache), and onnxruntime generation.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from modkit.builder.export.seq2seq import export_graphs
from modkit.runtime import make_session
from modkit.runtime.seq2seq import Seq2SeqSession
from modkit_plugins.backbones.bart_hf import BartFormat
from modkit_plugins.backbones.t5_hf import T5Format

NEW_TOKENS = 64


def reference(family: str):
    from transformers import (BartConfig, BartForConditionalGeneration, T5Config,
                              T5ForConditionalGeneration)

    torch.manual_seed(0)
    if family == "bart-base":
        config = BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                            encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                            decoder_ffn_dim=3072, forced_eos_token_id=None)
        hf, fmt = BartForConditionalGeneration(config), BartFormat()
    else:
        config = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
        hf, fmt = T5ForConditionalGeneration(config), T5Format()
    ours = fmt.from_hf(config.to_dict(), dict(hf.state_dict()))
    return hf.eval(), ours.eval()


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step(model, kwargs, labels):
    model.train()
    logits = model(**kwargs).logits
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
    model.zero_grad(set_to_none=True)
    model.eval()


def bench(family: str, reps: int) -> list[tuple[str, str, float, float]]:
    hf, ours = reference(family)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (4, 128), generator=g)
    mask = torch.ones_like(ids)
    dec = torch.randint(5, 1000, (4, 64), generator=g)
    kwargs = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
    rows = []
    with torch.no_grad():
        rows.append(("forward 4x128 -> 64", "transformers", timed(lambda: ours(**kwargs), reps),
                     timed(lambda: hf(**kwargs), reps)))
    rows.append(("training step", "transformers", timed(lambda: train_step(ours, kwargs, dec), reps),
                 timed(lambda: train_step(hf, kwargs, dec), reps)))

    from transformers import GenerationConfig

    src, src_mask = ids[:1, :32], mask[:1, :32]
    start = ours.config.decoder_start_token_id
    hf_config = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                 eos_token_id=ours.config.eos_token_id, pad_token_id=ours.config.pad_token_id,
                                 decoder_start_token_id=start)
    gen = dict(max_new_tokens=NEW_TOKENS, eos_token_id=-1)  # -1: never stops, always 64 tokens
    with torch.no_grad():
        cached = timed(lambda: ours.generate(src, src_mask, **gen), reps)
        rows.append(("greedy 64 tokens, cached", "transformers", cached,
                     timed(lambda: hf.generate(input_ids=src, attention_mask=src_mask,
                                               generation_config=hf_config), reps)))
        rows.append(("greedy 64 tokens, cached", "modkit uncached", cached,
                     timed(lambda: ours.generate(src, src_mask, use_cache=False, **gen), max(1, reps // 2))))
    with tempfile.TemporaryDirectory() as tmp:
        encoder, decoder = export_graphs(ours, Path(tmp), src, src_mask)
        session = Seq2SeqSession(make_session(encoder, "cpu"), make_session(decoder, "cpu"))
        onnx = timed(lambda: session.greedy(src.numpy(), src_mask.numpy(), max_new_tokens=NEW_TOKENS,
                                            decoder_start_token_id=start), reps)
        rows.append(("greedy 64 tokens, onnxruntime", "modkit torch cached", onnx, cached))
    return [(family, *row) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.reps}\n")
    print("| shape | measure | reference | modkit s | reference s | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for family in ("bart-base", "t5-small"):
        for shape, measure, ref, ours, theirs in bench(family, args.reps):
            print(f"| {shape} | {measure} | {ref} | {ours:.4f} | {theirs:.4f} | {ours / theirs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
