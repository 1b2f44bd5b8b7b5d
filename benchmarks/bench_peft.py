"""PEFT training steps: modkit's methods vs full fine-tuning and vs peft's same method.

    python benchmarks/bench_peft.py [--threads 1] [--repeats 5] [--batch 4] [--seq 128]

GPT-2-small and bert-base shapes (random weights built by transformers; modkit loads the
saved folder). One training step = forward, loss, backward, AdamW step over the trainable
weights. Times are medians of alternating runs in one process (so load from other processes
falls on all alike); peak memory is measured per configuration in a fresh subprocess (the
high-water mark of the resident set during two steps over the resident set of the loaded
model; Linux only). Prints a Markdown table
with ratios: vs full = step / modkit full fine-tuning step, vs peft = modkit / peft.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

import modkit

METHODS = {  # name -> (modkit peft options or None, peft config factory or None)
    "full": (None, None),
    "lora": ({"use": "lora", "r": 8, "alpha": 16, "targets": ["attn.q", "attn.v"]}, "lora"),
    "adapter": ({"use": "adapter", "bottleneck": 64}, None),
    "prefix": ({"use": "prefix", "length": 10}, "prefix"),
}


def hf_model(family: str, folder: Path | None = None):
    """A random model of the family's shape, or the one saved in ``folder`` (no init cost)."""
    cls = transformers.GPT2LMHeadModel if family == "gpt2-small" else transformers.BertModel
    if folder is not None:
        return cls.from_pretrained(folder)
    torch.manual_seed(0)
    return cls(transformers.GPT2Config() if family == "gpt2-small" else transformers.BertConfig())


def peft_config(kind: str, family: str):
    import peft

    if kind == "lora":  # GPT-2's q and v live in the fused c_attn: peft adapts all of it
        targets = ["c_attn"] if family == "gpt2-small" else ["query", "value"]
        return peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets)
    task = "CAUSAL_LM" if family == "gpt2-small" else "FEATURE_EXTRACTION"
    return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=10)


def setup(family: str, method: str, impl: str, folder: Path):
    """(model, loss function of the model, trainable parameters) for one configuration."""
    options, peft_kind = METHODS[method]
    if impl == "peft":
        import peft

        model = peft.get_peft_model(hf_model(family, folder), peft_config(peft_kind, family))
    elif impl == "transformers":
        model = hf_model(family, folder)
    else:
        model = modkit.load_model(folder)
        if options:
            comp = modkit.get_registry().get("peft", options["use"])
            method_obj = comp.load()(comp.options(**{k: v for k, v in options.items() if k != "use"}))
            modules = method_obj.apply(getattr(model, "backbone", model))
            model.requires_grad_(False)
            for m in modules:
                m.requires_grad_(True)
    if impl in ("modkit",):
        pick = (lambda out: out.logits) if family == "gpt2-small" else (lambda out: out.last_hidden_state)
        loss = lambda ids: pick(model(ids)).float().pow(2).mean()  # noqa: E731
    else:
        pick = (lambda out: out.logits) if family == "gpt2-small" else (lambda out: out.last_hidden_state)
        loss = lambda ids: pick(model(input_ids=ids)).float().pow(2).mean()  # noqa: E731
    params = [p for p in model.parameters() if p.requires_grad]
    return model.train(), loss, params


def step_fn(model, loss, params, batch: int, seq: int, vocab: int):
    ids = torch.randint(0, vocab, (batch, seq))
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss(ids).backward()
        optimizer.step()
    return run


def configurations():
    for method, (options, peft_kind) in METHODS.items():
        yield method, "modkit"
        if method == "full":
            yield method, "transformers"
        elif peft_kind:
            yield method, "peft"


def peak_memory(family: str, method: str, impl: str, folder: Path, args) -> float:
    """MiB the resident set grows by during two steps, in a fresh process."""
    code = (f"import sys; sys.argv = ['x', '--one', {json.dumps(family)}, {json.dumps(method)}, {json.dumps(impl)}, "
            f"{json.dumps(str(folder))}, '--threads', '{args.threads}', '--batch', '{args.batch}', '--seq', '{args.seq}']; "
            f"exec(open({json.dumps(__file__)}).read())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def one(args) -> None:
    family, method, impl, folder = args.one
    torch.set_num_threads(args.threads)
    model, loss, params = setup(family, method, impl, Path(folder))
    run = step_fn(model, loss, params, args.batch, args.seq, 30522 if family == "bert-base" else 50257)
    # Loading the model may peak above what the steps need: reset the peak (Linux clear_refs 5)
    # and measure the high-water mark of the steps over the resident set before them.
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    run()
    run()
    print((status_kib("VmHWM") - before) / 1024)


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batch {args.batch} x {args.seq}, median of {args.repeats} alternating runs\n")
    print("| model | method | impl | trainable | step (s) | vs full | vs peft | peak memory rise (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for family in ("gpt2-small", "bert-base"):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / family
            hf_model(family).save_pretrained(folder, safe_serialization=True)
            configs = list(configurations())
            built = [setup(family, m, i, folder) for m, i in configs]
            vocab = 30522 if family == "bert-base" else 50257
            fns = [step_fn(model, loss, params, args.batch, args.seq, vocab) for model, loss, params in built]
            for f in fns:
                f()  # warm-up (and AdamW state)
            times: list[list[float]] = [[] for _ in fns]
            for _ in range(args.repeats):
                for f, spent in zip(fns, times):
                    start = time.perf_counter()
                    f()
                    spent.append(time.perf_counter() - start)
            medians = {c: statistics.median(t) for c, t in zip(configs, times)}
            full = medians[("full", "modkit")]
            for (method, impl), (model, _, params) in zip(configs, built):
                total = sum(p.numel() for p in model.parameters())
                trainable = sum(p.numel() for p in params)
                ref = medians.get((method, "peft" if method != "full" else "transformers"))
                vs_ref = f"{medians[(method, impl)] / ref:.2f}" if impl == "modkit" and ref else ""
                memory = peak_memory(family, method, impl, folder, args)
                print(f"| {family} | {method} | {impl} | {100 * trainable / total:.2f} % | {medians[(method, impl)]:.3f} "
                      f"| {medians[(method, impl)] / full:.2f} | {vs_ref} | {memory:.0f} |", flush=True)
            del built, fns


if __name__ == "__main__":
    main()
