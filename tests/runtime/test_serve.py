"""`modkit serve` as a real uvicorn server on 127.0.0.1 (a free port), driven by httpx.

Only the loopback interface, and bounded request counts."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from modkit.runtime import Runtime

import httpx  # the dev extras install httpx, uvicorn and starlette: a missing one is an error, not a skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(artifact, *args):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "modkit", "serve", str(artifact), "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def healthy(url: str) -> bool:
    return httpx.get(url + "/healthz", timeout=5).json() == {"status": "ok"}


@pytest.fixture(scope="module")
def classifier(classifier_artifact):
    with server(classifier_artifact, "--max-batch", "8", "--max-wait-ms", "20", "--max-inputs", "16",
                "--max-body-bytes", "20000") as (url, _):
        yield url, Runtime(classifier_artifact)


def test_run_answers_what_modkit_run_json_prints(classifier):
    url, runtime = classifier
    inputs = ["connect a socket", {"text": "parse the command line", "label": "argparse"}, "dates and times"]
    r = httpx.post(url + "/v1/run", json={"inputs": inputs}, timeout=30)
    assert r.status_code == 200
    got = r.json()["results"]
    expected = runtime.run(inputs)
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected):
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-5)
    info = httpx.get(url + "/v1/info", timeout=5).json()
    assert info["task"]["task"] == "classify" and info["task"]["labels"] == runtime.task["labels"]


def test_concurrent_clients_are_batched_together_and_all_answered(classifier):
    url, runtime = classifier
    texts = [f"socket number {i} " + "word " * (i % 7) for i in range(120)]
    expected = {r["text"]: r["label"] for r in runtime.run(texts)}
    before = httpx.get(url + "/v1/info", timeout=5).json()["served"]

    def call(text):
        with httpx.Client(timeout=60) as client:
            return client.post(url + "/v1/run", json={"inputs": [text]})

    with ThreadPoolExecutor(16) as pool:  # 16 clients, 120 requests
        answers = list(pool.map(call, texts))
    assert [a.status_code for a in answers] == [200] * len(texts)
    assert all(a.json()["results"][0]["label"] == expected[t] for a, t in zip(answers, texts))
    after = httpx.get(url + "/v1/info", timeout=5).json()["served"]
    assert after["requests"] - before["requests"] == len(texts)
    assert after["batches"] - before["batches"] < len(texts)  # requests shared graph calls


@pytest.mark.parametrize("body, status, message", [
    (b'{"inputs": ["a"', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b'["a", "b"]', 422, "JSON object"),
    (b'{"inputs": "a text"}', 422, "non-empty list"),
    (b'{"inputs": []}', 422, "non-empty list"),
    (b'{"inputs": [42]}', 422, "inputs[0]: expected a text or an object, got int"),
    (b'{"inputs": [{"text": 5}]}', 422, "inputs[0].text: expected a string"),
    (b'{"inputs": [""]}', 422, "inputs[0].text: empty text"),
    (b'{"inputs": ["ok", "   "]}', 422, "inputs[1].text: empty text"),
    (b'{"inputs": [{"txt": "a"}]}', 422, "inputs[0]: unknown field 'txt'"),
    (b'{"inputs": ["a"], "temperature": 0.5}', 422, "classify takes no option 'temperature'; it takes none"),
    (b'{"inputs": ["a"], "batch": 3}', 422, "batch"),
    (json.dumps({"inputs": ["x"] * 17}).encode(), 413, "at most 16 per request"),
    (b'{"inputs": ["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["], "temperature": 1}', 422, "takes no option"),
    (json.dumps({"inputs": ["x" * 30_000]}).encode(), 413, "over 20000 bytes"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_stays_healthy(classifier, body, status, message):
    url, _ = classifier
    r = httpx.post(url + "/v1/run", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert healthy(url)


@pytest.mark.parametrize("depth", [9_000, 17])
def test_deeply_nested_json_is_a_400_not_a_500(classifier, depth):
    # thousands of nested arrays would make the JSON parser recurse past Python's limit
    url, _ = classifier
    body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    r = httpx.post(url + "/v1/run", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert (r.status_code, r.json()) == (400, {"error": "body nested too deeply: arrays and objects nest at most 16 deep"})
    assert healthy(url)


def test_chunked_huge_body_and_wrong_routes(classifier):
    url, _ = classifier

    def chunks():  # no content-length: the limit applies while reading
        yield b'{"inputs": ["'
        for _ in range(50):
            yield b"x" * 1000
        yield b'"]}'

    r = httpx.post(url + "/v1/run", content=chunks(), timeout=30)
    assert r.status_code == 413 and "over 20000 bytes" in r.json()["error"]
    assert httpx.get(url + "/v1/run", timeout=5).status_code == 405
    r = httpx.get(url + "/nowhere", timeout=5)
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    assert healthy(url)


def test_generation_options_per_request_and_graceful_shutdown(gpt_artifact):
    runtime = Runtime(gpt_artifact)
    options = {"temperature": 0.8, "top_k": 20, "seed": 4, "max_new_tokens": 6}
    with server(gpt_artifact, "--max-wait-ms", "10") as (url, proc):
        r = httpx.post(url + "/v1/run", json={"inputs": ["import the", "a"], **options}, timeout=60)
        assert r.status_code == 200
        assert r.json()["results"] == runtime.run(["import the", "a"], **options)
        r = httpx.post(url + "/v1/run", json={"inputs": ["a"], "num_beams": 2, "temperature": 0.5}, timeout=30)
        assert r.status_code == 422 and "beam search does not sample" in r.json()["error"]
        r = httpx.post(url + "/v1/run", json={"inputs": ["a"], "max_new_tokens": "many"}, timeout=30)
        assert r.status_code == 422 and "max_new_tokens" in r.json()["error"]
        penalised = {"repetition_penalty": 1.8, "max_new_tokens": 6}
        r = httpx.post(url + "/v1/run", json={"inputs": ["import the"], **penalised}, timeout=60)
        assert r.status_code == 200 and r.json()["results"] == runtime.run(["import the"], **penalised)
        r = httpx.post(url + "/v1/run", json={"inputs": ["a"], "repetition_penalty": 0}, timeout=30)
        assert r.status_code == 422 and "repetition_penalty: Input should be greater than 0" in r.json()["error"]
        assert healthy(url)

        # a long request in flight when SIGTERM comes still gets its answer; then the server exits
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(httpx.post, url + "/v1/run", timeout=120,
                               json={"inputs": ["the socket"] * 64, "max_new_tokens": 60, "num_beams": 4})
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            answer = long.result()
        assert answer.status_code == 200 and len(answer.json()["results"]) == 64
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn ends by re-raising the signal it caught


def test_serve_refuses_a_bad_artifact_before_listening(tmp_path):
    r = subprocess.run([sys.executable, "-m", "modkit", "serve", str(tmp_path), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a modkit artifact" in r.stderr


@pytest.mark.skipif(os.name != "posix", reason="uvicorn workers use fork/spawn differently elsewhere")
def test_several_workers_serve(classifier_artifact):
    with server(classifier_artifact, "--workers", "2") as (url, _):
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: httpx.post(url + "/v1/run", json={"inputs": [f"text {i}"]}, timeout=60),
                                    range(12)))
        assert all(a.status_code == 200 for a in answers)


def test_an_internal_error_answers_500_and_logs_its_traceback(classifier_artifact, caplog):
    # a plugin's task that fails while answering: the client gets a 500, the log the traceback
    from starlette.testclient import TestClient

    from modkit.serve.app import create_app

    runtime = Runtime(classifier_artifact)

    def broken(records, options):
        raise RuntimeError("the task broke")

    runtime.task_impl.run = broken
    with TestClient(create_app(runtime)) as client, caplog.at_level("ERROR", logger="modkit.serve"):
        r = client.post("/v1/run", json={"inputs": ["connect a socket"]})
    assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError: the task broke"}
    [record] = [r for r in caplog.records if r.name == "modkit.serve"]
    assert record.exc_info and "the task broke" in caplog.text and "Traceback" in caplog.text
