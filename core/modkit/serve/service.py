"""What every protocol's routes share: the loaded model, its batcher and limits, reading a
body, and running inputs with each failure turned into an HTTP status and a message."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

from starlette.requests import Request

from modkit.errors import UserError
from modkit.serve.batcher import Batcher, Overloaded
from modkit.serve.metrics import Metrics


log = logging.getLogger("modkit.serve")


def internal_error(request: Request, error: Exception) -> str:
    """Log a fault of modkit or a plugin met answering ``request``, with its traceback (call it
    in the ``except`` block); return the message the client gets, without the traceback."""
    log.exception("internal error answering %s %s", request.method, request.url.path)
    return f"internal error: {type(error).__name__}: {error}"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Service:
    runtime: Any
    batcher: Batcher
    limits: Any  # app.Limits
    #: the model's name in /v2/models/{name} and OpenAI's "model" (default: the artifact's name)
    name: str
    metrics: Metrics
    #: (a /v1/run body as a dict) -> (records, options), or BadRequest: the checks of POST /v1/run
    check: Callable[[dict], tuple[list[dict[str, Any]], Any]]
    #: the chat template (see :mod:`modkit.serve.chat`), or None: no /v1/chat/completions
    chat_template: Any = None

    async def infer(self, records: list[dict[str, Any]], options: Any, *, watch=None) -> list[dict[str, Any]]:
        """The results of checked records, or BadRequest with the status that says why not:
        503 (queue full), 504 (past the timeout), 422 (the task refused), 500 (a fault)."""
        try:
            return await asyncio.wait_for(self.batcher.submit(records, options, watch=watch), self.limits.timeout_s)
        except Overloaded as e:
            raise BadRequest(503, f"overloaded: {e}; retry later") from None
        except asyncio.TimeoutError:
            raise BadRequest(504, f"no result within {self.limits.timeout_s:g} s") from None
        except UserError as e:
            raise BadRequest(422, str(e)) from None


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(413, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():  # a chunked body has no length to check first
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body over {limit} bytes")
    return bytes(body)


#: arrays and objects inside one another a body may hold: a /v1/run request needs 4 ({"inputs":
#: [{"choices": [...]}]}), a tensor's nested "data" its rank and 3; the bound keeps the JSON
#: parser's recursion (a RecursionError deep down) out of reach, checked before parsing
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


def load_json(body: bytes) -> Any:
    """The body's JSON, or BadRequest(400) naming what is wrong (nesting too deep included)."""
    if _nested_too_deep(body):
        raise BadRequest(400, f"body nested too deeply: arrays and objects nest at most {MAX_NESTING} deep")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"body is not valid JSON ({e})") from None
