"""The HTTP service of `modkit serve`: a Starlette app over one :class:`~modkit.runtime.Runtime`.

``POST /v1/run`` ``{"inputs": [text or record, ...], <task run options>}`` -> ``{"results": [...]}``
(the objects ``modkit run --json`` prints); ``GET /v1/info``; ``GET /healthz``. A bad request
gets a 4xx and a JSON ``{"error": ...}`` naming what is wrong; it never reaches the model.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modkit.errors import UserError
from modkit.serve.batcher import Batcher, Overloaded


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_inputs: int = 256  # per request
    max_text_chars: int = 100_000
    max_batch: int = 32  # inputs per graph call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 4096  # inputs waiting, over all requests
    timeout_s: float = 60.0  # per request, queueing included


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(runtime, limits: Limits = Limits()) -> Starlette:
    """The service over a loaded runtime."""
    batcher = Batcher(runtime, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms,
                      max_queue=limits.max_queue)
    task = runtime.task_impl
    allowed_fields = set(task.input_fields) | set(task.optional_fields)
    gold_fields = set(task.optional_fields) - set(task.input_fields)

    async def run(request: Request) -> JSONResponse:
        try:
            records, options = _parse(await _body(request, limits.max_body_bytes), runtime, allowed_fields,
                                      gold_fields, limits)
        except BadRequest as e:
            return _error(e.status, str(e))
        try:
            results = await asyncio.wait_for(batcher.submit(records, options), limits.timeout_s)
        except Overloaded as e:
            return JSONResponse({"error": f"overloaded: {e}; retry later"}, status_code=503,
                                headers={"Retry-After": "1"})
        except asyncio.TimeoutError:
            return _error(504, f"no result within {limits.timeout_s:g} s")
        except UserError as e:
            return _error(422, str(e))
        except Exception as e:  # a fault of modkit or a plugin: the server stays up
            return _error(500, f"internal error: {type(e).__name__}: {e}")
        return JSONResponse({"results": results})

    async def info(request: Request) -> JSONResponse:
        m = runtime.manifest
        return JSONResponse({
            "name": m.get("name"), "modkit_version": m.get("modkit_version"), "task": runtime.task,
            "components": {k: {"name": v["name"], "plugin": v["plugin"], "version": v["version"]}
                           for k, v in m["components"].items() if isinstance(v, dict) and "name" in v},
            "options": runtime.task_component.options.model_json_schema(),
            "limits": limits.__dict__, "served": batcher.figures})

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

    return Starlette(routes=[Route("/v1/run", run, methods=["POST"]), Route("/v1/info", info),
                             Route("/healthz", healthz)],
                     exception_handlers={HTTPException: http_error}, lifespan=lifespan)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(413, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():  # a chunked body has no length to check first
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body over {limit} bytes")
    return bytes(body)


#: arrays and objects inside one another a body may hold: a request needs 4 ({"inputs": [{"choices":
#: [...]}]}); the bound keeps the JSON parser's recursion (a RecursionError deep down) out of reach
MAX_NESTING = 16
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _nested_too_deep(body: bytes) -> bool:
    """Whether arrays and objects nest more than :data:`MAX_NESTING` deep in a JSON text
    (brackets inside strings aside)."""
    depth = 0
    for c in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if c in b"[{" else -1
        if depth > MAX_NESTING:
            return True
    return False


def _parse(body: bytes, runtime, allowed_fields: set[str], gold_fields: set[str],
           limits: Limits) -> tuple[list[dict[str, Any]], Any]:
    """The request's records and validated options, or BadRequest naming the first problem."""
    if _nested_too_deep(body):
        raise BadRequest(400, f"body nests arrays and objects more than {MAX_NESTING} deep")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"body is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BadRequest(422, 'body must be a JSON object {"inputs": [...], ...options}')
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
