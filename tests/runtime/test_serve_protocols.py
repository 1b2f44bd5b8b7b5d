"""`modkit serve` spoken to by the protocols' own clients, unmodified: Triton's `tritonclient.http`
(the Open Inference Protocol), the `openai` SDK, and Prometheus' text parser; API keys, request
ids, CORS. Real servers on 127.0.0.1, bounded request counts."""
from __future__ import annotations

import json
import math

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from modkit.runtime import Runtime

from .test_serve import healthy, server

KEY = "sk-test-0123456789"
TEMPLATE = {"roles": {"system": "{content}\n", "user": "Q: {content}\n", "assistant": "A: {content}\n"},
            "generation_prompt": "A:", "stop": ["Q:"]}


def scrape(url: str, headers=None) -> dict[tuple[str, tuple], float]:
    """Every sample of GET /metrics, parsed by prometheus_client: (name, sorted labels) -> value."""
    text = httpx.get(url + "/metrics", headers=headers, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_count(samples, route: str, code: str) -> float:
    return samples[("modkit_requests_total", (("code", code), ("route", route)))]


# -- the Open Inference Protocol ----------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(classifier_artifact):
    with server(classifier_artifact, "--max-batch", "8", "--max-wait-ms", "10", "--max-body-bytes", "20000",
                "--cors-origin", "http://app.example") as (url, _):
        yield url, Runtime(classifier_artifact)


def test_triton_client_health_metadata_and_infer(classifier):
    url, runtime = classifier
    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny-cls")
    assert not client.is_model_ready("other")
    labels = runtime.task["labels"]
    meta = client.get_model_metadata("tiny-cls")
    assert meta["name"] == "tiny-cls" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                              {"name": "label", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "label": ("BYTES", [-1]), "probabilities": ("FP32", [-1, len(labels)])}
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]

    texts = ["connect a socket", "parse the command line", "dates and times"]
    expected = runtime.run(texts)
    for binary in (True, False):  # the client's default binary tensors, and plain JSON
        text = triton.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
        outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
        result = client.infer("tiny-cls", [text], outputs=outputs, request_id="req-7")
        labels_got = [x.decode() if binary else x for x in result.as_numpy("label")]  # JSON BYTES come as str
        assert labels_got == [e["label"] for e in expected]
        probabilities = result.as_numpy("probabilities")
        assert probabilities.dtype == np.float32 and probabilities.shape == (len(texts), len(labels))
        assert probabilities == pytest.approx(np.array([[e["probabilities"][k] for k in labels] for e in expected]),
                                              abs=1e-5)
        assert result.get_response()["id"] == "req-7"
    # no outputs named: all of them, binary (the client asks binary_data_output)
    result = client.infer("tiny-cls", [text])
    assert result.as_numpy("probabilities").shape == (len(texts), len(labels))
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [text])
    with pytest.raises(InferenceServerException, match="no version '2'"):
        client.get_model_metadata("tiny-cls", model_version="2")


@pytest.mark.parametrize("body, status, message", [
    (b'{"inputs": [', 400, "not valid JSON"),
    (b"[" * 9_000 + b"]" * 9_000, 400, "nested too deeply"),
    (b'{"inputs": []}', 400, "non-empty list of tensors"),
    (b'{"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}', 400, "unknown input 'txt'"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}', 400, "expected 'BYTES'"),
    (b'{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}', 400, "holds 2 elements"),
    (b'{"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]}', 400, "shape [0]"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [5]}]}', 400, "must be a text"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [""]}]}', 400, "empty text"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "parameters": '
     b'{"temperature": 1}}', 400, "temperature"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": '
     b'[{"name": "logits"}]}', 400, "unknown output 'logits'"),
    (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}',
     400, "runs past the body"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_malformed_infer_requests_get_the_protocols_errors(classifier, body, status, message):
    url, _ = classifier
    r = httpx.post(url + "/v2/models/tiny-cls/infer", content=body, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert healthy(url)


def test_metrics_count_what_was_sent_and_cors_only_for_the_origin_given(classifier):
    url, _ = classifier
    before = scrape(url)
    for _ in range(5):
        assert httpx.post(url + "/v1/run", json={"inputs": ["a socket", "a date"]}, timeout=30).status_code == 200
    for _ in range(3):
        assert httpx.post(url + "/v1/run", json={"inputs": [""]}, timeout=30).status_code == 422
    body = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]}
    for _ in range(2):
        assert httpx.post(url + "/v2/models/tiny-cls/infer", json=body, timeout=30).status_code == 200
    after = scrape(url)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta(("modkit_requests_total", (("code", "200"), ("route", "run")))) == 5
    assert delta(("modkit_requests_total", (("code", "422"), ("route", "run")))) == 3
    assert delta(("modkit_requests_total", (("code", "200"), ("route", "infer")))) == 2
    assert delta(("modkit_inputs_total", (("route", "run"),))) == 10
    assert delta(("modkit_inputs_total", (("route", "infer"),))) == 6
    assert delta(("modkit_request_seconds_count", (("route", "run"),))) == 8
    assert delta(("modkit_request_seconds_bucket", (("le", "+Inf"), ("route", "run")))) == 8
    assert delta(("modkit_queue_seconds_count", ())) == 7  # the requests that reached the model
    assert delta(("modkit_batch_size_sum", ())) == 16  # every input ran once
    assert after[("modkit_requests_in_flight", ())] == 1  # the scrape itself
    assert after[("modkit_queue_inputs", ())] == 0

    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    r = httpx.options(url + "/v1/run", headers=preflight, timeout=5)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = httpx.options(url + "/v1/run", headers={**preflight, "Origin": "http://evil.example"}, timeout=5)
    assert "access-control-allow-origin" not in r.headers


# -- OpenAI's API ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm(gpt_artifact, tmp_path_factory):
    template = tmp_path_factory.mktemp("chat") / "chat.json"
    template.write_text(json.dumps(TEMPLATE))
    with server(gpt_artifact, "--max-wait-ms", "5", "--api-key", "another-key", "--api-key", KEY,
                "--chat-template", str(template)) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        yield url, client, Runtime(gpt_artifact)


def test_completions_are_modkit_runs_text(lm):
    url, client, runtime = lm
    prompt = "import the"
    for options, expected_options in [
        (dict(temperature=0.8, top_p=0.9, seed=3), dict(temperature=0.8, top_p=0.9, seed=3)),
        (dict(temperature=0), dict(do_sample=False)),
        (dict(temperature=1.2, extra_body={"top_k": 20}, seed=9), dict(temperature=1.2, top_k=20, seed=9)),
    ]:
        answer = client.completions.create(model="tiny-lm", prompt=prompt, max_tokens=8, **options)
        [run] = runtime.run([prompt], max_new_tokens=8, **expected_options)
        assert answer.choices[0].text == run["generated"]
        assert answer.usage.completion_tokens == len(run["ids"])
        assert answer.usage.prompt_tokens == len(runtime.tokenizer.encode(prompt))
        assert answer.choices[0].finish_reason == ("length" if len(run["ids"]) == 8 else "stop")
        assert answer.id.startswith("cmpl-") and answer.model == "tiny-lm"

    # n choices of two prompts: choice i samples with seed + i
    answer = client.completions.create(model="tiny-lm", prompt=["import the", "a"], n=2, max_tokens=6,
                                       temperature=0.9, seed=5)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    for c in answer.choices:
        [run] = runtime.run([["import the", "a"][c.index // 2]], max_new_tokens=6, temperature=0.9, seed=5 + c.index % 2)
        assert c.text == run["generated"]


def test_streamed_completions_send_token_by_token_the_same_text(lm):
    url, client, runtime = lm
    options = dict(max_tokens=12, temperature=0.7, seed=2)
    [run] = runtime.run(["the socket"], max_new_tokens=12, temperature=0.7, seed=2)
    chunks = list(client.completions.create(model="tiny-lm", prompt="the socket", stream=True,
                                            stream_options={"include_usage": True}, **options))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == run["generated"]
    assert len([t for t in texts if t]) >= 3  # token by token, not one answer at the end
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == len(run["ids"])

    # a stop text: the answer ends before it, streamed or not, and decoding stopped there
    stop = run["generated"][len(run["generated"]) // 2:][:3]
    whole = client.completions.create(model="tiny-lm", prompt="the socket", stop=[stop], **options)
    expected = run["generated"][:run["generated"].find(stop)]
    assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny-lm", prompt="the socket", stop=stop, stream=True, **options)
    assert "".join(c.choices[0].text for c in streamed) == expected
    assert whole.usage.completion_tokens < len(run["ids"])


def test_logprobs_are_the_models(lm):
    url, client, runtime = lm
    answer = client.completions.create(model="tiny-lm", prompt="import the", max_tokens=5, temperature=0, logprobs=3)
    lp = answer.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == answer.usage.completion_tokens
    assert "".join(lp.tokens) == answer.choices[0].text and lp.text_offset[0] == 0
    ids = runtime.tokenizer.encode("import the")  # the first token's distribution, from the plain graph
    logits = runtime.session("model.onnx").run(["logits"], {"input_ids": np.array([ids]),
                                                            "attention_mask": np.ones((1, len(ids)), np.int64)})[0]
    last = logits[0, -1].astype(np.float64)
    logp = last - last.max() - math.log(np.exp(last - last.max()).sum())
    assert lp.token_logprobs[0] == pytest.approx(logp.max(), abs=1e-4)  # greedy: the best token
    assert max(lp.top_logprobs[0].values()) == pytest.approx(logp.max(), abs=1e-4) and len(lp.top_logprobs[0]) == 3


def test_chat_with_the_declared_template(lm):
    url, client, runtime = lm
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "open a file"}]
    prompt = "You write Python.\nQ: open a file\nA:"
    [run] = runtime.run([prompt], max_new_tokens=10, temperature=0.9, seed=4)
    expected = run["generated"].split("Q:")[0]
    answer = client.chat.completions.create(model="tiny-lm", messages=messages, max_tokens=10, temperature=0.9, seed=4,
                                            logprobs=True, top_logprobs=2)
    assert answer.choices[0].message.content == expected and answer.choices[0].message.role == "assistant"
    assert answer.usage.prompt_tokens == len(runtime.tokenizer.encode(prompt))
    assert len(answer.choices[0].logprobs.content) == answer.usage.completion_tokens
    stream = client.chat.completions.create(model="tiny-lm", messages=messages, max_tokens=10, temperature=0.9,
                                            seed=4, stream=True)
    deltas = [c.choices[0].delta for c in stream]
    assert deltas[0].role == "assistant" and "".join(d.content or "" for d in deltas) == expected
    with pytest.raises(openai.BadRequestError, match="role 'tool' is not in the chat template"):
        client.chat.completions.create(model="tiny-lm", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])


def test_openai_errors_keys_and_request_ids(lm):
    url, client, _ = lm
    assert [m.id for m in client.models.list()] == ["tiny-lm"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="a")
    with pytest.raises(openai.NotFoundError, match="embed artifacts"):
        client.embeddings.create(model="tiny-lm", input="a")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny-lm", prompt="a", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.completions.create(model="tiny-lm", prompt="a", presence_penalty=0.5)
    with pytest.raises(openai.BadRequestError, match="prompt: empty text"):
        client.completions.create(model="tiny-lm", prompt="")
    r = httpx.post(url + "/v1/completions", content=b"[" * 50_000 + b"]" * 50_000, timeout=10,
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    # no key, a wrong key: 401 everywhere but the health probes
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for method, path in [("POST", "/v1/run"), ("GET", "/v1/models"), ("GET", "/metrics"),
                             ("GET", "/v2/models/tiny-lm"), ("GET", "/v1/info")]:
            r = httpx.request(method, url + path, headers=headers, json={"inputs": ["a"]}, timeout=10)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    for path in ("/healthz", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(url + path, timeout=5).status_code == 200
    # request ids: the client's kept, else one made; in the answer's header and the completion's id
    r = httpx.post(url + "/v1/completions", json={"model": "tiny-lm", "prompt": "a", "max_tokens": 2},
                   headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "trace-42"}, timeout=30)
    assert r.headers["x-request-id"] == "trace-42" and r.json()["id"] == "cmpl-trace-42"
    r = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert len(r.headers["x-request-id"]) == 32
    assert "access-control-allow-origin" not in httpx.options(
        url + "/v1/models", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "GET"}).headers
    assert healthy(url)


def test_seq2seq_completions_and_chat_refused_without_a_template(seq2seq_artifact):
    runtime = Runtime(seq2seq_artifact)
    with server(seq2seq_artifact) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        source = "it is not a daemon thread"
        answer = client.completions.create(model="tiny-s2s", prompt=source, max_tokens=6, temperature=0)
        [run] = runtime.run([source], max_new_tokens=6, do_sample=False)
        assert answer.choices[0].text == run["generated"]
        streamed = client.completions.create(model="tiny-s2s", prompt=source, max_tokens=6, temperature=0.8, seed=1,
                                             stream=True)
        [run] = runtime.run([source], max_new_tokens=6, temperature=0.8, seed=1)
        assert "".join(c.choices[0].text for c in streamed) == run["generated"]
        with pytest.raises(openai.BadRequestError, match="declares no chat template"):
            client.chat.completions.create(model="tiny-s2s", messages=[{"role": "user", "content": "hi"}])


def test_embeddings_are_modkit_runs_vectors(embed_artifact):
    runtime = Runtime(embed_artifact)
    texts = ["open a socket", "parse dates"]
    expected = np.array([r["embedding"] for r in runtime.run(texts)], np.float32)
    with server(embed_artifact) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for fmt in (openai.NOT_GIVEN, "float"):  # the SDK asks base64 unless told otherwise
            answer = client.embeddings.create(model="tiny-embed", input=texts, encoding_format=fmt)
            got = np.array([d.embedding for d in answer.data], np.float32)
            assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-6
            assert answer.usage.prompt_tokens == sum(len(runtime.tokenizer.encode(t)) for t in texts)
        with pytest.raises(openai.NotFoundError, match="generate and seq2seq"):
            client.completions.create(model="tiny-embed", prompt="a")


def test_infer_on_a_language_model_takes_run_options_as_parameters(lm):
    url, _, runtime = lm
    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {KEY}"}
    text = triton.InferInput("text", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"import the"], [b"a"]], dtype=object))
    result = client.infer("tiny-lm", [text], parameters={"max_new_tokens": 5, "temperature": 0.9, "seed": 7},
                          headers=headers)
    expected = runtime.run(["import the", "a"], max_new_tokens=5, temperature=0.9, seed=7)
    assert [x.decode() for x in result.as_numpy("generated")] == [e["generated"] for e in expected]
    ids = result.as_numpy("ids")  # ragged rows padded with -1
    assert ids.dtype == np.int64 and [[t for t in row if t >= 0] for row in ids.tolist()] == [e["ids"] for e in expected]
    meta = client.get_model_metadata("tiny-lm", headers=headers)
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"generated": "BYTES", "ids": "INT64"}
    with pytest.raises(InferenceServerException, match="401|API key"):
        client.infer("tiny-lm", [text])
