"""A server that survives: counters over all workers, a worker killed with SIGKILL replaced while
the others go on, a request past its timeout freeing its batch slot, the access log and key files.
Real servers on 127.0.0.1, bounded load."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .test_serve import free_port, healthy, server

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uvicorn workers and signals as on Linux")


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def totals(url: str) -> dict[str, float]:
    """Each family's samples summed (over labels), from a scrape parsed by prometheus_client."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {f.name: sum(s.value for s in f.samples if s.name == f.name + ("_total" if f.type == "counter" else ""))
            for f in text_string_to_metric_families(text)}


def wait_for(condition, seconds: float = 60, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {seconds} s"
        time.sleep(0.2)


def test_counters_are_the_whole_servers_and_a_killed_worker_is_replaced(gpt_artifact):
    with server(gpt_artifact, "--workers", "2", "--max-wait-ms", "2") as (url, proc):
        wait_for(lambda: len(children(proc.pid) & worker_pids(url)) == 2, what="two workers answering")
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: httpx.post(url + "/v1/run", json={"inputs": [f"text {i}"],
                                                                                "max_new_tokens": 2}, timeout=60),
                                    range(6)))
        assert all(a.status_code == 200 for a in answers)
        for _ in range(6):  # whichever worker answers: all six (issue 21: each worker showed its own)
            assert httpx.get(url + "/v1/info", timeout=10).json()["served"]["requests"] == 6
            assert totals(url)["modkit_requests"] >= 6

        # a worker killed under load: the requests it held fail at once (the connection closes), the
        # others are answered, and uvicorn starts a new worker that serves
        workers = children(proc.pid) & worker_pids(url)
        victim = min(workers)
        before = totals(url)["modkit_requests"]
        body = {"inputs": ["the socket"] * 8, "max_new_tokens": 40, "num_beams": 2}

        def call(i):
            try:
                return httpx.post(url + "/v1/run", json=body, timeout=120).status_code
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError) as e:
                return type(e).__name__

        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(call, i) for i in range(12)]
            time.sleep(1.0)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            outcomes = [f.result() for f in futures]  # none hangs: each has an answer or an error
        assert "ReadTimeout" not in outcomes
        failed = [o for o in outcomes if o != 200]
        assert len(failed) < len(outcomes)  # the other worker went on
        assert all(o in ("RemoteProtocolError", "ReadError", "ConnectError") for o in failed), outcomes
        wait_for(lambda: len(children(proc.pid) & worker_pids(url, tries=8)) == 2 and victim not in
                 children(proc.pid), what="a new worker")
        recovered = time.monotonic() - killed_at
        with ThreadPoolExecutor(4) as pool:
            after = list(pool.map(lambda i: httpx.post(url + "/v1/run", json={"inputs": ["a"], "max_new_tokens": 2},
                                                       timeout=60).status_code, range(12)))
        assert after == [200] * 12
        # the dead worker's counts stay: counters never go down
        assert totals(url)["modkit_requests"] >= before + len(outcomes) - len(failed) + 12
        assert healthy(url)
        print(f"killed worker: {len(failed)} of {len(outcomes)} requests failed, full service after {recovered:.1f} s")


def worker_pids(url: str, tries: int = 12) -> set[int]:
    """The workers that answered ``tries`` calls of /v1/info (fresh connections: any worker may take one)."""
    pids = set()
    for _ in range(tries):
        try:
            pids.add(httpx.get(url + "/v1/info", timeout=10).json()["worker"])
        except httpx.TransportError:
            pass
    return pids


def test_a_request_past_its_timeout_frees_its_batch_slot(gpt_artifact):
    with server(gpt_artifact, "--timeout", "0.3", "--max-batch", "64") as (url, _):
        slow = {"inputs": ["the socket"] * 64, "max_new_tokens": 60, "num_beams": 4}
        with ThreadPoolExecutor(2) as pool:  # one running, one queued behind it (other options)
            running = pool.submit(httpx.post, url + "/v1/run", json=slow, timeout=60)
            time.sleep(0.05)
            queued = pool.submit(httpx.post, url + "/v1/run", json={**slow, "num_beams": 3}, timeout=60)
            assert running.result().status_code == 504 and queued.result().status_code == 504
        # the running batch stops at its next token; the queued request leaves the queue (or, taken
        # before its own timeout, stops too)
        wait_for(lambda: totals(url)["modkit_stopped_decodings"] >= 1, 30, "the abandoned batch stopped")
        wait_for(lambda: totals(url)["modkit_queue_inputs"] == 0, 30, "an empty queue")
        stopped = totals(url)["modkit_stopped_decodings"]
        r = httpx.post(url + "/v1/run", json={"inputs": ["a"], "max_new_tokens": 2}, timeout=60)
        assert r.status_code == 200
        assert totals(url)["modkit_stopped_decodings"] == stopped <= 2


def test_access_log_lines_are_json_with_the_request_id_and_key_files(classifier_artifact, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# operators\nkey-one\n\nkey-two\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "modkit", "serve", str(classifier_artifact), "--port", str(port),
                             "--api-key-file", str(keys), "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 120, "the server")
        r = httpx.post(url + "/v1/run", json={"inputs": ["a", "b"]}, timeout=30,
                       headers={"Authorization": "Bearer key-two", "X-Request-ID": "abc-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
        r = httpx.post(url + "/v1/run", json={"inputs": ["a"]}, timeout=30, headers={"Authorization": "Bearer x"})
        assert r.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["request_id"] == "abc-123"]
    assert len(mine) == 1 and mine[0]["status"] == 200 and mine[0]["inputs"] == 2 and mine[0]["path"] == "/v1/run"
    assert [line["status"] for line in lines if line["path"] == "/v1/run"] == [200, 401]
    assert all(len(line["request_id"]) == 32 for line in lines if line["request_id"] != "abc-123")

    empty = tmp_path / "empty.txt"
    empty.write_text("# no key yet\n")
    r = subprocess.run([sys.executable, "-m", "modkit", "serve", str(classifier_artifact), "--port", str(free_port()),
                        "--api-key-file", str(empty)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no key in it" in r.stderr


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
