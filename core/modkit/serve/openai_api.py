"""OpenAI-compatible routes: ``POST /v1/completions``, ``/v1/chat/completions``, ``/v1/embeddings``,
``GET /v1/models``, as the ``openai`` SDK and the servers built for it (vLLM, TGI) speak them.

Completions serve every generating task (language models, seq2seq: the prompt is the source);
chat needs a chat template (:mod:`modkit.serve.chat`); embeddings serve ``embed`` artifacts.
A request's options become the task's run options, so a completion is the text ``modkit run``
generates with the same ones: ``max_tokens`` -> ``--max-new-tokens``, ``temperature`` (0:
greedy; left out: the artifact's decoding, greedy unless it says otherwise, as TGI), ``top_p``,
``top_k``, ``seed`` (choice i of ``n`` samples with seed + i), ``repetition_penalty``. ``stop``
texts cut the answer before them. ``logprobs`` are the model's log-probabilities (before
temperature and filtering) of each token drawn. ``stream: true`` sends server-sent events, one
per token as it is drawn (a text held back while it could still become a stop text or ends
inside a character).
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, Literal

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from modkit.runtime.generation import GenerationOptions, StopDecoding, Watcher
from modkit.serve.service import BadRequest, Service, internal_error, load_json, read_body

_KIND = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
         503: "server_overloaded", 504: "timeout"}


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    status = 400 if status == 422 else status  # OpenAI's clients know a refused request as 400
    return JSONResponse({"error": {"message": message, "type": _KIND.get(status, "server_error"), "param": param,
                                   "code": code}}, status_code=status)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, description="vLLM's: sample among the k best (-1 or 0: all)")
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2 ** 32)
    stream: bool = False
    stream_options: StreamOptions | None = None
    repetition_penalty: float | None = Field(None, gt=0, description="vLLM's and TGI's")
    frequency_penalty: Literal[0, 0.0] | None = None  # accepted when off: modkit has no such penalty
    presence_penalty: Literal[0, 0.0] | None = None
    user: str | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or not all(stops):
            raise BadRequest(400, "stop: at most 4 non-empty texts")
        return stops


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False
    best_of: Literal[1] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a name, tool fields...: nothing modkit uses
    role: str
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if not all(part.get("type") == "text" and isinstance(part.get("text"), str) for part in self.content):
            raise BadRequest(400, "messages: only text content parts are served")
        return "".join(part["text"] for part in self.content)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class Collector(Watcher):
    """Watches the decoding of one input: its tokens, their log-probabilities (``top`` best
    alternatives too), a stop text reached (decoding ends there), and ``on_token`` told of each
    token as it is drawn (in the inference thread)."""

    def __init__(self, decode, stops: list[str], top: int | None, on_token=None):
        self.decode, self.stops, self.top, self.on_token = decode, stops, top, on_token
        self.ids: list[int] = []
        self.logprobs: list[tuple[float, list[tuple[int, float]]]] = []

    def tokens(self, rows, tokens, finished, logits) -> None:
        if finished[0]:  # the eos: decoding ends by itself
            return
        token = int(tokens[0])
        self.ids.append(token)
        if self.top is not None:
            shifted = logits[0].astype(np.float64) - logits[0].max()
            logp = shifted - np.log(np.exp(shifted).sum())
            best = np.argsort(-logp, kind="stable")[:self.top]
            self.logprobs.append((float(logp[token]), [(int(t), float(logp[t])) for t in best]))
        if self.on_token:
            self.on_token()
        if self.stops and any(s in self.decode(self.ids) for s in self.stops):
            raise StopDecoding("a stop text")


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop text in it, and whether there was one."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(found)], True) if found else (text, False)


def tokens_to_stop(ids: list[int], decode, stops: list[str]) -> int:
    """How many of ``ids`` were generated until a stop text appeared (all of them if none did)."""
    if stops and any(s in decode(ids) for s in stops):
        for k in range(1, len(ids) + 1):
            if any(s in decode(ids[:k]) for s in stops):
                return k
    return len(ids)


def routes(service: Service) -> list[Route]:
    api = OpenAIRoutes(service)
    return [Route("/v1/completions", api.handler(chat=False), methods=["POST"]),
            Route("/v1/chat/completions", api.handler(chat=True), methods=["POST"]),
            Route("/v1/embeddings", api.embeddings, methods=["POST"]), Route("/v1/models", api.models),
            Route("/v1/models/{model:path}", api.one_model)]


class OpenAIRoutes:
    """The OpenAI routes of one service: what its artifact's task serves decides which answer."""

    def __init__(self, service: Service):
        self.service = service
        self.runtime = service.runtime
        self.tokenizer = service.runtime.tokenizer
        self.generates = issubclass(self.runtime.task_component.options, GenerationOptions)
        self.embeds = self.runtime.task["task"] == "embed"
        self.created = int(time.time())

    def decode(self, ids):
        return self.tokenizer.decode(ids)

    def prompt_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    async def read(self, request: Request, model: type[BaseModel], route: str, serves: bool, what: str):
        if not serves:
            raise BadRequest(404, f"{route} is not served for this model: it is a {self.runtime.task['task']!r} "
                                  f"artifact, and {route} serves {what}")
        doc = load_json(await read_body(request, self.service.limits.max_body_bytes))
        try:
            req = model.model_validate(doc)
        except pydantic.ValidationError as e:
            err = e.errors()[0]
            raise BadRequest(400, f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}") from None
        if req.model != self.service.name:
            raise BadRequest(404, f"the model {req.model!r} does not exist; this server serves {self.service.name!r}")
        return req

    @staticmethod
    def options_for(req: _Sampling, max_tokens: int | None, choice: int) -> dict[str, Any]:
        opts: dict[str, Any] = {"max_new_tokens": max_tokens, "repetition_penalty": req.repetition_penalty}
        if req.temperature == 0:
            opts["do_sample"] = False
        else:
            opts.update(temperature=req.temperature, top_p=req.top_p,
                        top_k=req.top_k if req.top_k and req.top_k > 0 else None)
        if req.seed is not None:
            opts["seed"] = (req.seed + choice) % 2 ** 32
        return opts

    def checked(self, prompt: str, opts: dict[str, Any], name: str):
        try:
            return self.service.check({"inputs": [prompt], **opts})
        except BadRequest as e:  # named as the client named it
            raise BadRequest(400, str(e).replace("inputs[0].text", name)) from None

    def chat_prompts(self, req: ChatRequest) -> tuple[list[str], list[str], int | None, int | None]:
        """(the prompt, the template's stop texts, how many top logprobs, the token limit) of a chat request."""
        template = self.service.chat_template
        if template is None:
            raise BadRequest(400, "this model declares no chat template: use /v1/completions, or start "
                                  "`modkit serve` with --chat-template FILE (see docs/deploy.md)")
        unknown = sorted({m.role for m in req.messages} - set(template.roles))
        if unknown:
            raise BadRequest(400, f"messages: role {unknown[0]!r} is not in the chat template (roles: "
                                  f"{', '.join(template.roles)})")
        top = (req.top_logprobs or 0) if req.logprobs else None
        return ([template.render([(m.role, m.text()) for m in req.messages])], list(template.stop), top,
                req.max_completion_tokens or req.max_tokens)

    async def complete(self, request: Request, chat: bool) -> Any:
        req = await self.read(request, ChatRequest if chat else CompletionRequest,
                              "/v1/chat/completions" if chat else "/v1/completions", self.generates,
                              "generate and seq2seq artifacts")
        stops = req.stops()
        if chat:
            prompts, template_stops, top, max_tokens = self.chat_prompts(req)
            stops += template_stops
        else:
            prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
            if not prompts:
                raise BadRequest(400, "prompt: an empty list")
            top, max_tokens = req.logprobs, req.max_tokens
        named = "messages" if chat else "prompt" if isinstance(req.prompt, str) else "prompt[{}]"
        jobs = [(i * req.n + j, prompt, self.checked(prompt, self.options_for(req, max_tokens, j), named.format(i)))
                for i, prompt in enumerate(prompts) for j in range(req.n)]
        request.state.inputs = len(jobs)
        ident = ("chatcmpl-" if chat else "cmpl-") + request.state.request_id
        head = {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.service.name}
        usage_prompt = sum(self.prompt_tokens(p) for p in prompts) * req.n
        if req.stream:
            return _stream(self.service, request, jobs, stops, top, max_tokens, head, chat, usage_prompt,
                           bool(req.stream_options and req.stream_options.include_usage))
        return await self.answer_all(jobs, stops, top, max_tokens, head, chat, usage_prompt)

    async def answer_all(self, jobs, stops, top, max_tokens, head, chat: bool, usage_prompt: int) -> JSONResponse:
        """Every choice of a request that does not stream, in one response."""
        decode = self.decode
        collectors = {index: Collector(decode, stops, top) if top is not None else None for index, _, _ in jobs}
        outcomes = await asyncio.gather(*(_run(self.service, records, options, collectors[index])
                                          for index, _, (records, options) in jobs))
        choices, generated = [], 0
        for (index, prompt, _), (result, stopped) in zip(jobs, outcomes):
            ids = result["ids"] if result else collectors[index].ids
            text, hit = cut_at_stop(result["generated"] if result else decode(ids), stops)
            k = tokens_to_stop(ids, decode, stops)
            generated += k
            finish = "stop" if hit or stopped or not max_tokens or k < max_tokens else "length"
            lp = _logprobs(collectors[index], k, decode, chat) if top is not None else None
            body = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            choices.append({"index": index, **body, "logprobs": lp, "finish_reason": finish})
        return JSONResponse({**head, "choices": choices, "usage": {
            "prompt_tokens": usage_prompt, "completion_tokens": generated, "total_tokens": usage_prompt + generated}})

    def handler(self, chat: bool):
        async def answer(request: Request):
            try:
                return await self.complete(request, chat)
            except BadRequest as e:
                return _error(e.status, str(e), code="model_not_found" if "does not exist" in str(e) else None)
            except Exception as e:  # a fault of modkit or a plugin: the server stays up, the log keeps the traceback
                return _error(500, internal_error(request, e))
        return answer

    async def embeddings(self, request: Request):
        try:
            req = await self.read(request, EmbeddingRequest, "/v1/embeddings", self.embeds, "embed artifacts")
            texts = [req.input] if isinstance(req.input, str) else req.input
            records, options = self.service.check({"inputs": texts})
            request.state.inputs = len(records)
            results = await self.service.infer(records, options)
            if req.dimensions is not None and req.dimensions != len(results[0]["embedding"]):
                raise BadRequest(400, f"dimensions: this model's embeddings have {len(results[0]['embedding'])}")
        except BadRequest as e:
            return _error(e.status, str(e))
        except Exception as e:
            return _error(500, internal_error(request, e))

        def encoded(vector):
            if req.encoding_format == "float":
                return vector
            return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()

        used = sum(self.prompt_tokens(t) for t in texts)
        return JSONResponse({"object": "list", "model": self.service.name,
                             "data": [{"object": "embedding", "index": i, "embedding": encoded(r["embedding"])}
                                      for i, r in enumerate(results)],
                             "usage": {"prompt_tokens": used, "total_tokens": used}})

    def card(self):
        return {"id": self.service.name, "object": "model", "created": self.created, "owned_by": "modkit"}

    async def models(self, request: Request):
        return JSONResponse({"object": "list", "data": [self.card()]})

    async def one_model(self, request: Request):
        if request.path_params["model"] != self.service.name:
            return _error(404, f"the model {request.path_params['model']!r} does not exist", code="model_not_found")
        return JSONResponse(self.card())


async def _run(service: Service, records, options, collector: Collector | None):
    """(the task's result, False), or (None, True) when the collector stopped decoding at a stop text."""
    try:
        return (await service.infer(records, options, watch=collector))[0], False
    except StopDecoding:
        return None, True


def _logprobs(collector: Collector, k: int, decode, chat: bool) -> dict[str, Any]:
    """The first ``k`` tokens' log-probabilities in the shape of OpenAI's chat or completions."""
    ids, entries = collector.ids[:k], collector.logprobs[:k]
    if chat:
        def one(token: int, logprob: float) -> dict[str, Any]:
            text = decode([token])
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
        return {"content": [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in best]}
                            for t, (lp, best) in zip(ids, entries)]}
    tokens = [decode([t]) for t in ids]
    offsets, at = [], 0
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return {"tokens": tokens, "token_logprobs": [lp for lp, _ in entries],
            "top_logprobs": [{decode([a]): alp for a, alp in best} for _, best in entries] if collector.top else None,
            "text_offset": offsets}


def _stream(service: Service, request: Request, jobs, stops: list[str], top: int | None, max_tokens: int | None,
            head: dict[str, Any], chat: bool, usage_prompt: int, include_usage: bool) -> StreamingResponse:
    """Server-sent events: a chunk per token drawn (per choice), then each choice's last chunk
    with its finish reason, the usage if asked, and ``data: [DONE]``."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    news: asyncio.Queue = asyncio.Queue()
    decode = service.runtime.tokenizer.decode
    hold = max((len(s) for s in stops), default=1) - 1  # a stop text may be starting in the last characters
    # (choice, True) for each token drawn, in order, then (choice, False) when its run ended
    collectors = {index: Collector(decode, stops, top, on_token=lambda i=index: loop.call_soon_threadsafe(
        news.put_nowait, (i, True))) for index, _, _ in jobs}
    runs = {}
    for index, _, (records, options) in jobs:
        runs[index] = asyncio.ensure_future(_run(service, records, options, collectors[index]))
        runs[index].add_done_callback(lambda _, i=index: news.put_nowait((i, False)))
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(index: int, text: str, finish: str | None, logprobs=None, first=False) -> str:
        if chat:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return "data: " + json.dumps({**head, "object": kind, "choices": [choice]}) + "\n\n"

    async def events():
        sent = {index: "" for index in runs}  # the text each choice has sent
        drawn = {index: 0 for index in runs}  # the tokens each choice has been told of
        logged = {index: 0 for index in runs}  # the tokens whose log-probabilities it has sent
        finished: set[int] = set()
        generated = 0
        try:
            while len(finished) < len(runs):
                index, token = await news.get()
                collector = collectors[index]
                if token:  # send what is safe to send of the tokens so far
                    if not any(drawn.values()):
                        service.metrics.observe("modkit_time_to_first_token_seconds", time.perf_counter() - started)
                    drawn[index] += 1
                    text = decode(collector.ids[:drawn[index]])
                    safe = text[:len(text) - hold] if hold else text
                    safe = safe.rstrip("\ufffd")  # a character still incomplete
                    safe, _ = cut_at_stop(safe, stops)
                    if len(safe) > len(sent[index]) and safe.startswith(sent[index]):
                        n = drawn[index]
                        lp = _delta_logprobs(collector, logged[index], n, decode, chat) if top is not None else None
                        yield chunk(index, safe[len(sent[index]):], None, lp, first=not sent[index])
                        sent[index], logged[index] = safe, n
                    continue
                finished.add(index)
                try:
                    result, stopped = runs[index].result()
                except BadRequest as e:
                    yield "data: " + json.dumps({"error": {"message": str(e), "code": e.status}}) + "\n\n"
                    continue
                ids = result["ids"] if result else collector.ids
                text, hit = cut_at_stop(result["generated"] if result else decode(ids), stops)
                k = tokens_to_stop(ids, decode, stops)
                generated += k
                if stopped:
                    service.metrics.inc("modkit_generated_tokens_total", len(collector.ids))
                finish = "stop" if hit or stopped or not max_tokens or k < max_tokens else "length"
                rest = text[len(sent[index]):] if text.startswith(sent[index]) else ""
                lp = _delta_logprobs(collector, logged[index], k, decode, chat) if top is not None else None
                yield chunk(index, rest, finish, lp, first=not sent[index])
            if include_usage:
                yield "data: " + json.dumps({**head, "object": kind, "choices": [], "usage": {
                    "prompt_tokens": usage_prompt, "completion_tokens": generated,
                    "total_tokens": usage_prompt + generated}}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or all is sent): nothing is left decoding for nobody
            for run in runs.values():
                run.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _delta_logprobs(collector: Collector, start: int, end: int, decode, chat: bool) -> dict[str, Any]:
    part = Collector(decode, [], collector.top)
    part.ids, part.logprobs = collector.ids[start:end], collector.logprobs[start:end]
    return _logprobs(part, end - start, decode, chat)
