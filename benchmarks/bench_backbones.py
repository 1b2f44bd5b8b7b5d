"""modkit backbones vs transformers, same weights, same thread count, ratios from one run.

    python benchmarks/bench_backbones.py [--threads 1] [--repeats 5] [--skip-onnx]

For GPT-2-small and bert-base shapes (random weights, built by transformers, loaded by
modkit from the saved folder): forward at 1x128 and 8x128, a training step (forward,
backward, AdamW) at 4x128; then onnxruntime on modkit's exported graph vs torch eager at
batch 1. Prints a Markdown table; ratio = modkit / reference (below 1: modkit is faster).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

import modkit

SEQ = 128


def families():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config())  # 124M, tied head
    bert = transformers.BertModel(transformers.BertConfig())  # bert-base, 109M
    return {"gpt2-small": (gpt2, lambda out: out.logits), "bert-base": (bert, lambda out: out.last_hidden_state)}


def median_seconds(*fns, repeats: int) -> list[float]:
    """Median time of each function; runs alternate, so load from other processes on a
    shared machine falls on all of them alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def forward_fn(model, pick, batch: int, vocab: int):
    ids = torch.randint(0, vocab, (batch, SEQ))

    def run():
        with torch.inference_mode():
            pick(model(input_ids=ids))
    return run


def train_step_fn(model, pick, batch: int, vocab: int):
    ids = torch.randint(0, vocab, (batch, SEQ))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def run():
        model.train()
        loss = pick(model(input_ids=ids)).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.eval()
    return run


class Logits(torch.nn.Module):
    """The tensor the ONNX graph returns: logits (GPT) or the last hidden state (BERT)."""

    def __init__(self, model, pick):
        super().__init__()
        self.model, self.pick = model, pick

    def forward(self, input_ids, attention_mask):
        return self.pick(self.model(input_ids, attention_mask))


def onnx_vs_eager(model, pick, vocab: int, folder: Path, repeats: int) -> tuple[float, float, float]:
    import onnxruntime as ort

    ids = torch.randint(0, vocab, (1, SEQ))
    mask = torch.ones_like(ids)
    path = folder / "model.onnx"
    wrapped = Logits(model, pick).eval()
    torch.onnx.export(wrapped, (ids, mask), str(path), opset_version=17, dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["output"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    with torch.inference_mode():
        expected = wrapped(ids, mask)
    parity = float((torch.from_numpy(session.run(None, feed)[0]) - expected).abs().max())

    def eager():
        with torch.inference_mode():
            wrapped(ids, mask)

    ort_s, eager_s = median_seconds(lambda: session.run(None, feed), eager, repeats=repeats)
    return ort_s, eager_s, parity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-onnx", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    onnx_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (reference, pick) in families().items():
            reference.eval()
            reference.save_pretrained(Path(tmp) / name, safe_serialization=True)
            ours = modkit.load_model(Path(tmp) / name)
            vocab = reference.config.vocab_size
            for label, make, batch in (("forward", forward_fn, 1), ("forward", forward_fn, 8),
                                       ("train step", train_step_fn, 4)):
                t_ref, t_ours = median_seconds(make(reference, pick, batch, vocab),
                                               make(ours, pick, batch, vocab), repeats=args.repeats)
                rows.append((name, f"{label} {batch}x{SEQ}", t_ours, t_ref))
                print(f"{name} {label} {batch}x{SEQ}: modkit {t_ours * 1e3:.1f} ms, "
                      f"transformers {t_ref * 1e3:.1f} ms", flush=True)
            if not args.skip_onnx:
                onnx_rows.append((name, *onnx_vs_eager(ours, pick, vocab, Path(tmp), args.repeats)))
    print(f"\nthreads: {args.threads}, repeats: {args.repeats} (median), torch {torch.__version__}, "
          f"transformers {transformers.__version__}\n")
    print("| model | case | modkit (ms) | transformers (ms) | ratio |\n|---|---|---:|---:|---:|")
    for name, case, ours, ref in rows:
        print(f"| {name} | {case} | {ours * 1e3:.1f} | {ref * 1e3:.1f} | {ours / ref:.2f} |")
    if onnx_rows:
        print("\n| model | onnxruntime 1x128 (ms) | torch eager 1x128 (ms) | ratio | max abs diff |\n"
              "|---|---:|---:|---:|---:|")
        for name, ort_s, eager_s, parity in onnx_rows:
            print(f"| {name} | {ort_s * 1e3:.1f} | {eager_s * 1e3:.1f} | {ort_s / eager_s:.2f} | {parity:.1e} |")


if __name__ == "__main__":
    main()
