"""The HTTP service of `modkit serve`: a Starlette app over one :class:`~modkit.runtime.Runtime`.

``POST /v1/run`` ``{"inputs": [text or record, ...], <task run options>}`` -> ``{"results": [...]}``
(the objects ``modkit run --json`` prints); ``GET /v1/info``; ``GET /healthz``; ``GET /metrics``;
the Open Inference Protocol (:mod:`modkit.serve.kserve`) and OpenAI's routes
(:mod:`modkit.serve.openai_api`) beside them. A bad request gets a 4xx and a JSON
``{"error": ...}`` naming what is wrong; it never reaches the model.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from modkit.errors import UserError
from modkit.serve import kserve, openai_api
from modkit.serve.batcher import Batcher
from modkit.serve.metrics import Metrics
from modkit.serve.middleware import RequestContext, setup_access_log
from modkit.serve.service import BadRequest, Service, internal_error, load_json, read_body


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_inputs: int = 256  # per request
    max_text_chars: int = 100_000
    max_batch: int = 32  # inputs per graph call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 4096  # inputs waiting, over all requests
    timeout_s: float = 60.0  # per request, queueing included


@dataclass(frozen=True)
class Access:
    """Who may call, from where, and under which name."""

    api_keys: tuple[str, ...] = ()  # none: no key asked
    cors_origins: tuple[str, ...] = ()  # none: no CORS headers (browsers on other origins refused)
    model_name: str | None = None  # default: the artifact's name
    chat_template: Any = None  # a modkit.serve.chat.ChatTemplate, or None
    metrics_table: str | None = None  # the table shared by the workers (None: this process's own)
    log_level: str = "info"  # of the JSON access log


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Retry-After": "1"} if status == 503 else None)


def create_app(runtime, limits: Limits = Limits(), access: Access = Access()) -> Starlette:
    """The service over a loaded runtime."""
    setup_access_log(access.log_level)
    metrics = Metrics(access.metrics_table)
    batcher = Batcher(runtime, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms,
                      max_queue=limits.max_queue, metrics=metrics)
    task = runtime.task_impl
    allowed_fields = set(task.input_fields) | set(task.optional_fields)
    gold_fields = set(task.optional_fields) - set(task.input_fields)
    service = Service(runtime, batcher, limits, access.model_name or runtime.manifest.name or "model",
                      metrics, lambda doc: check_request(doc, runtime, allowed_fields, gold_fields, limits),
                      access.chat_template)

    async def run(request: Request) -> JSONResponse:
        try:
            records, options = service.check(load_json(await read_body(request, limits.max_body_bytes)))
            request.state.inputs = len(records)
            results = await service.infer(records, options)
        except BadRequest as e:
            return _error(e.status, str(e))
        except Exception as e:  # a fault of modkit or a plugin: the server stays up, the log keeps the traceback
            return _error(500, internal_error(request, e))
        return JSONResponse({"results": results})

    async def info(request: Request) -> JSONResponse:
        m = runtime.manifest
        return JSONResponse({
            "name": m.name, "modkit_version": m.modkit_version, "task": runtime.task.as_dict(),
            "components": {k: {"name": c.name, "plugin": c.plugin, "version": c.version}
                           for k, c in (("tokenizer", m.components.tokenizer), ("backbone", m.components.backbone))},
            "options": runtime.task_component.options.model_json_schema(),
            "limits": limits.__dict__, "served": served(metrics), "worker": os.getpid()})

    async def scrape(request: Request) -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(request: Request) -> JSONResponse:
        alive = batcher.loop_task is not None and not batcher.loop_task.done()
        return JSONResponse({"status": "ok" if alive else "failing"}, status_code=200 if alive else 503)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()  # uvicorn has finished the requests in flight by now

    middleware = [Middleware(RequestContext, metrics=metrics, api_keys=access.api_keys)]
    if access.cors_origins:  # outside the key check: a browser's preflight carries no key
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(access.cors_origins),
                                        allow_methods=["GET", "POST"], allow_headers=["*"],
                                        expose_headers=["X-Request-ID"]))
    routes = [Route("/v1/run", run, methods=["POST"]), Route("/v1/info", info), Route("/healthz", healthz),
              Route("/metrics", scrape), *kserve.routes(service), *openai_api.routes(service)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error},
                     lifespan=lifespan)


def served(metrics: Metrics) -> dict[str, int]:
    """What the model answered, over all workers: requests and inputs answered 200 on the routes
    that run it, and batches run."""
    model_routes = ("run", "infer", "completions", "chat", "embeddings")
    return {"requests": int(sum(metrics.total("modkit_requests_total", route=r, code="200") for r in model_routes)),
            "inputs": int(metrics.total("modkit_inputs_total")), "batches": int(metrics.total("modkit_batch_size"))}


def check_request(doc: Any, runtime, allowed_fields: set[str], gold_fields: set[str],
                  limits: Limits) -> tuple[list[dict[str, Any]], Any]:
    """A /v1/run body's records and validated options, or BadRequest naming the first problem."""
    if not isinstance(doc, dict):
        raise BadRequest(422, 'body must be a JSON object {"inputs": [...], ...options}')
    doc = dict(doc)
    inputs = doc.pop("inputs", None)
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(422, '"inputs" must be a non-empty list of texts or objects')
    if len(inputs) > limits.max_inputs:
        raise BadRequest(413, f'"inputs" holds {len(inputs)} items; at most {limits.max_inputs} per request')
    for n, item in enumerate(inputs):
        record = {"text": item} if isinstance(item, str) else item
        if not isinstance(record, dict):
            raise BadRequest(422, f"inputs[{n}]: expected a text or an object, got {type(item).__name__}")
        unknown = sorted(set(record) - allowed_fields)
        if unknown:
            raise BadRequest(422, f"inputs[{n}]: unknown field {unknown[0]!r} (fields: {', '.join(sorted(allowed_fields))})")
        for key, value in record.items():
            if key in gold_fields and isinstance(value, (int, float)) and not isinstance(value, bool):
                continue  # a gold number (a regression target, a choice's index): the task's check judges it
            # a text, or (any field but "text") a list of texts: a multiple-choice record's
            # choices, a tagger's words
            texts = value if isinstance(value, list) and value and key != "text" else [value]
            bad = next((t for t in texts if not isinstance(t, str)), None)
            if bad is not None:
                raise BadRequest(422, f"inputs[{n}].{key}: expected a string or a list of strings, got "
                                      f"{type(value if bad is value else bad).__name__}")
            if not all(t.strip() for t in texts):
                raise BadRequest(422, f"inputs[{n}].{key}: empty text")
            length = sum(len(t) for t in texts)
            if length > limits.max_text_chars:
                raise BadRequest(413, f"inputs[{n}].{key}: {length} characters; at most {limits.max_text_chars}")
    try:
        return runtime.records(inputs), runtime.options(**doc)
    except UserError as e:
        raise BadRequest(422, str(e)) from None
