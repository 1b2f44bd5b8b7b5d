"""`modkit serve` under load on the loopback interface, through each protocol it speaks.

    python benchmarks/bench_serve.py [--requests 1000] [--clients 32] [--soak-seconds 180] [--rate 40]
                                     [--classifier OUT] [--lm OUT]

- requests/s and latency p50/p99 of ``POST /v1/run`` and ``POST /v2/models/NAME/infer`` (a classifier),
  and of streamed ``/v1/completions`` (a language model; time to first token and to the last);
- a worker of two killed with SIGKILL a third of the way through a load: how many requests
  failed, how long until two workers serve again, the slowest answer (nothing hangs);
- a soak at a steady rate: the server's memory (RSS of every process) over time.

Without --classifier/--lm, tiny artifacts are built first (a BERT classifier and a GPT-2 style
language model trained a few steps on the repository's examples; that needs torch). Every
request stays on 127.0.0.1; every count is bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [json.loads(line)["text"] for line in (ROOT / "examples/tiny-gpt/modules.jsonl").read_text().splitlines()]


def build_artifacts(folder: Path) -> tuple[Path, Path]:
    import modkit

    labels = sorted({json.loads(line)["label"] for line in (ROOT / "examples/tiny-gpt/modules.jsonl").read_text()
                     .splitlines()})
    (folder / "data.jsonl").write_text((ROOT / "examples/tiny-gpt/modules.jsonl").read_text())
    (folder / "corpus.txt").write_text((ROOT / "examples/tiny-gpt/corpus.txt").read_text()[:200_000])
    specs = {"cls": f'''name = "bench-cls"
[tokenizer]
use = "wordpiece"
vocab_size = 2000
train_on = "corpus.txt"
[backbone]
use = "bert"
d_model = 128
n_layers = 2
n_heads = 4
n_positions = 128
[[stages]]
objective = {{ use = "classify", labels = {json.dumps(labels)} }}
data = "data.jsonl"
steps = 60
batch_size = 16
seq_len = 64
''', "lm": '''name = "bench-lm"
[tokenizer]
use = "bpe"
vocab_size = 2000
train_on = "corpus.txt"
[backbone]
use = "gpt"
d_model = 128
n_layers = 2
n_heads = 4
n_positions = 256
[[stages]]
objective = { use = "clm" }
data = "corpus.txt"
steps = 100
batch_size = 16
seq_len = 64
'''}
    outs = []
    for name, spec in specs.items():
        (folder / f"{name}.toml").write_text(spec)
        modkit.build(folder / f"{name}.toml", folder / name, progress=False, echo=lambda _: None)
        outs.append(folder / name)
    return outs[0], outs[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, artifact: Path, *args: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([sys.executable, "-m", "modkit", "serve", str(artifact), "--host", "127.0.0.1",
                                      "--port", self.url.rsplit(":", 1)[1], "--log-level", "warning", *args])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def pids(self) -> list[int]:
        """The server's process and its workers."""
        kids = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
                if _ppid(p) == self.proc.pid]
        return [self.proc.pid, *kids]

    def rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def _ppid(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


async def load(clients: int, requests: list, send) -> tuple[float, list[float], list]:
    """``send(http, request)`` for every request from ``clients`` concurrent clients: seconds, latencies, outcomes."""
    latencies, outcomes, queue = [], [], list(reversed(requests))

    async def client(http):
        while queue:
            item = queue.pop()
            start = time.perf_counter()
            try:
                outcomes.append(await send(http, item))
            except httpx.HTTPError as e:
                outcomes.append(type(e).__name__)
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - start, latencies, outcomes


def report(label: str, seconds: float, latencies: list[float], outcomes: list, extra: str = "") -> dict:
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    errors = sum(o is not True for o in outcomes)
    print(f"{label}: {len(outcomes) / seconds:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {errors}{extra}",
          flush=True)
    return {"label": label, "rps": len(outcomes) / seconds, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def bench_protocols(cls: Path, lm: Path, requests: int, clients: int) -> None:
    texts = [TEXTS[i % len(TEXTS)] for i in range(requests)]
    server = Server(cls)
    try:
        name = httpx.get(server.url + "/v1/info").json()["name"]

        async def run(http, text):
            return (await http.post(server.url + "/v1/run", json={"inputs": [text]})).status_code == 200

        async def infer(http, text):
            body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
            return (await http.post(server.url + f"/v2/models/{name}/infer", json=body)).status_code == 200

        asyncio.run(load(clients, texts[:50], run))  # warm up
        report("POST /v1/run (classifier)", *asyncio.run(load(clients, texts, run)))
        report(f"POST /v2/models/{name}/infer (classifier)", *asyncio.run(load(clients, texts, infer)))
    finally:
        server.stop()

    server = Server(lm)
    try:
        name = httpx.get(server.url + "/v1/info").json()["name"]
        first_tokens, tokens = [], []

        async def stream(http, text):
            start, first, count, done = time.perf_counter(), None, 0, False
            body = {"model": name, "prompt": " ".join(text.split()[:8]), "max_tokens": 32, "temperature": 0.8,
                    "stream": True}
            async with http.stream("POST", server.url + "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if chunk["choices"] and chunk["choices"][0]["text"]:
                            first = first or time.perf_counter() - start
                            count += 1
                    done = done or line == "data: [DONE]"
                ok = r.status_code == 200 and done
            first_tokens.append(first or 0.0)
            tokens.append(count)
            return ok

        prompts = texts[: max(requests // 4, 50)]
        asyncio.run(load(clients, prompts[:20], stream))
        for n in (1, clients):  # one client alone, then many: a stream runs as a batch of its own
            first_tokens.clear()
            tokens.clear()
            seconds, latencies, outcomes = asyncio.run(load(n, prompts[:50] if n == 1 else prompts, stream))
            t50, t99 = np.percentile(first_tokens, [50, 99]) * 1000
            report(f"POST /v1/completions, stream (language model, 32 tokens), {n} client(s)", seconds, latencies,
                   outcomes, f", time to first token p50 {t50:.1f} ms, p99 {t99:.1f} ms, text chunks/answer "
                             f"{np.mean(tokens):.1f}")
    finally:
        server.stop()


def bench_kill(cls: Path, requests: int, clients: int) -> None:
    server = Server(cls, "--workers", "2")
    try:
        texts = [TEXTS[i % len(TEXTS)] for i in range(requests)]
        sent = {"n": 0}

        async def run(http, text):
            sent["n"] += 1
            return (await http.post(server.url + "/v1/run", json={"inputs": [text]})).status_code == 200

        async def workers() -> set[int]:
            """The workers answering 20 calls, each on a new connection (any worker may accept it)."""
            seen = set()
            async with httpx.AsyncClient(timeout=5, headers={"Connection": "close"}) as http:
                for _ in range(20):
                    try:
                        seen.add((await http.get(server.url + "/v1/info")).json()["worker"])
                    except httpx.HTTPError:
                        pass
            return seen

        async def killer():
            while sent["n"] < requests // 3:
                await asyncio.sleep(0.01)
            victim = min(await workers())
            os.kill(victim, signal.SIGKILL)
            killed = time.perf_counter()
            while time.perf_counter() - killed < 120:  # two workers again, the new one answering
                seen = await workers()
                if len(seen) == 2 and victim not in seen:
                    return time.perf_counter() - killed
                await asyncio.sleep(0.1)
            return float("inf")

        async def both():
            recovery = asyncio.create_task(killer())
            result = await load(clients, texts, run)
            return result, await recovery

        (seconds, latencies, outcomes), recovered = asyncio.run(both())
        failed = [o for o in outcomes if o is not True]
        report("POST /v1/run, 2 workers, one killed (SIGKILL) after a third", seconds, latencies, outcomes,
               f"; failed: {len(failed)} ({', '.join(sorted(set(map(str, failed)))) or '-'}); two workers "
               f"serving again {recovered:.1f} s after the kill; slowest answer {max(latencies) * 1000:.0f} ms")
    finally:
        server.stop()


def bench_soak(cls: Path, seconds: float, rate: float) -> None:
    """A steady rate of /v1/run (classifier) for ``seconds``; the server's RSS sampled every tenth."""
    server = Server(cls, "--workers", "2")
    try:
        samples = []

        async def soak():
            errors, sent, tasks = 0, 0, []
            async with httpx.AsyncClient(timeout=60) as http:
                async def one(i):
                    nonlocal errors
                    try:
                        r = await http.post(server.url + "/v1/run", json={"inputs": [TEXTS[i % len(TEXTS)]]})
                        errors += r.status_code != 200
                    except httpx.HTTPError:
                        errors += 1

                start = time.perf_counter()
                next_sample = 0.0
                while (now := time.perf_counter() - start) < seconds:
                    if now >= next_sample:
                        samples.append((now, server.rss_mib()))
                        next_sample += seconds / 10
                    tasks.append(asyncio.create_task(one(sent)))
                    sent += 1
                    await asyncio.sleep(max(0.0, sent / rate - (time.perf_counter() - start)))
                await asyncio.gather(*tasks)
                samples.append((time.perf_counter() - start, server.rss_mib()))
            return sent, errors

        sent, errors = asyncio.run(soak())
        print(f"soak: {sent} requests at {rate:g}/s over {seconds:g} s, errors {errors}; RSS of the server's "
              f"processes (MiB) at " + ", ".join(f"{t:.0f} s: {m:.0f}" for t, m in samples), flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", type=Path)
    parser.add_argument("--lm", type=Path)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--soak-seconds", type=float, default=180)
    parser.add_argument("--rate", type=float, default=40, help="requests per second during the soak")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cls, lm = args.classifier, args.lm
        if cls is None or lm is None:
            built = build_artifacts(Path(tmp))
            cls, lm = cls or built[0], lm or built[1]
        print(f"{os.cpu_count()} CPUs; {args.clients} clients", flush=True)
        bench_protocols(cls, lm, args.requests, args.clients)
        bench_kill(cls, args.requests, args.clients)
        if args.soak_seconds > 0:
            bench_soak(cls, args.soak_seconds, args.rate)


if __name__ == "__main__":
    main()
