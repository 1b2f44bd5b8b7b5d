"""How far the training layouts that should agree end apart: 2 DDP processes vs 1, k
accumulated micro-batches vs one batch of k·b, torch.compile vs eager.

    python benchmarks/bench_equivalence.py [--steps 20]

A 2-layer GPT (d_model 64, no dropout, so processes and micro-batches can agree exactly) is
trained on the tiny-gpt corpus with the same seed in each layout; the table gives the largest
absolute difference over all weights from the 1-process, one-batch build, and each build's
seconds. The DDP run goes through `modkit build --nproc 2` (torchrun, gloo).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "tiny-gpt" / "corpus.txt"

SPEC = '''
name = "equivalence"
seed = 5
{top}
[tokenizer]
use = "bpe"
vocab_size = 500
train_on = ["corpus.txt"]
[backbone]
use = "gpt"
d_model = 64
n_layers = 2
n_heads = 2
n_positions = 64
dropout = 0.0
[[stages]]
objective = {{ use = "clm" }}
data = "corpus.txt"
steps = {steps}
batch_size = {batch}
seq_len = 64
lr = 3e-4
{stage}
[export]
onnx = false
'''

LAYOUTS = {  # name -> (spec top-level lines, batch_size, stage lines, extra CLI arguments)
    "1 process, batch 8 (reference)": ("", 8, "", []),
    "2 DDP processes, batch 8": ("", 8, "", ["--nproc", "2"]),
    "accumulate = 2 x batch 4": ("", 4, "accumulate = 2", []),
    "accumulate = 4 x batch 2": ("", 2, "accumulate = 4", []),
    "compile = true, batch 8": ("compile = true", 8, "", []),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "corpus.txt").write_text(CORPUS.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
        print(f"| layout ({args.steps} steps) | max abs weight difference from the reference | seconds |\n|---|---:|---:|")
        reference = None
        for n, (name, (top, batch, stage, extra)) in enumerate(LAYOUTS.items()):
            spec = tmp / f"spec{n}.toml"
            spec.write_text(SPEC.format(top=top, steps=args.steps, batch=batch, stage=stage))
            out = tmp / f"out{n}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "modkit", "build", str(spec), "-o", str(out), "--quiet", *extra],
                           check=True, capture_output=True)
            seconds = time.perf_counter() - t0
            weights = load_file(str(out / "model.safetensors"))
            if reference is None:
                reference, diff = weights, 0.0
            else:
                diff = max((weights[k].double() - reference[k].double()).abs().max().item() for k in reference)
            print(f"| {name} | {diff:.2e} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
