"""What every request goes through before its route: a request id, the API key check, the
counters of ``GET /metrics`` and one JSON line of access log (plain ASGI, so streamed answers
pass through as they are written)."""
from __future__ import annotations

import hmac
import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from modkit.serve.metrics import Metrics

#: routes anyone may call: a load balancer's or orchestrator's probes carry no key
OPEN_PATHS = frozenset({"/healthz", "/v2/health/live", "/v2/health/ready"})
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # a client's X-Request-ID is kept when printable and short
access_log = logging.getLogger("modkit.serve.access")


def route_of(path: str) -> str:
    """The route a path is counted under in the metrics."""
    if path == "/v1/run":
        return "run"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "infer"
    return {"/v1/completions": "completions", "/v1/chat/completions": "chat",
            "/v1/embeddings": "embeddings"}.get(path, "other")


def setup_access_log(level: str) -> None:
    """JSON lines on standard error, at ``level`` (uvicorn's own access log is off)."""
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.propagate = False
    access_log.setLevel(level.upper())


class RequestContext:
    """ASGI middleware: request id (the client's ``X-Request-ID`` or a new one, sent back in the
    same header and kept in ``scope["state"]["request_id"]``), ``Authorization: Bearer KEY``
    against ``api_keys`` (none: no check) on every path but the health probes, in-flight and
    per-route counts, latency, and the access log line."""

    def __init__(self, app, *, metrics: Metrics, api_keys: tuple[str, ...] = ()):
        self.app, self.metrics = app, metrics
        self.api_keys = tuple(k.encode() for k in api_keys)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _CLIENT_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        route = route_of(scope["path"])
        status = {"code": None}

        def count(code: int) -> None:  # when the answer starts: before the client can read it
            status["code"] = code
            self.metrics.inc("modkit_requests_total", route=route, code=str(code))
            if code == 200 and state.get("inputs"):
                self.metrics.inc("modkit_inputs_total", state["inputs"], route=route)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                count(message["status"])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        self.metrics.inc("modkit_requests_in_flight")
        try:
            if self.api_keys and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
                await _unauthorized(send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            if status["code"] is None:  # Starlette answers 500 outside this middleware
                count(500)
            raise
        finally:
            self.metrics.inc("modkit_requests_in_flight", -1)
            if status["code"] is None:  # no answer started: the client left first (nginx's 499)
                count(499)
            seconds = time.perf_counter() - started
            self.metrics.observe("modkit_request_seconds", seconds, route=route)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(json.dumps({
                    "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "request_id": request_id, "method": scope["method"], "path": scope["path"],
                    "status": status["code"], "ms": round(seconds * 1000, 2),
                    "client": f"{client[0]}:{client[1]}" if client else None, "inputs": state.get("inputs")}))

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = key.strip().encode()
        # every key compared, in constant time each: the answer's timing tells nothing of them
        return any([hmac.compare_digest(given, k) for k in self.api_keys])


async def _unauthorized(send) -> None:
    body = json.dumps({"error": "missing or wrong API key: send the header 'Authorization: Bearer KEY'"}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer")]})
    await send({"type": "http.response.body", "body": body})


def read_api_keys(keys: tuple[str, ...], files: tuple[str, ...]) -> tuple[str, ...]:
    """The keys given on the command line and in files (one a line; blank lines and # comments
    skipped); a key file that cannot be read, or an empty key, is the user's error."""
    from modkit.errors import UserError

    found = list(keys)
    for path in files:
        before = len(found)
        try:
            text = open(path, encoding="utf-8").read()
        except OSError as e:
            raise UserError(f"--api-key-file {path}: cannot read it ({e.strerror})") from None
        lines = [line.strip() for line in text.splitlines()]
        found += [line for line in lines if line and not line.startswith("#")]
        if len(found) == before:  # an empty file must not turn the check off
            raise UserError(f"--api-key-file {path}: no key in it (one key a line)")
    for key in found:
        if not key.strip() or any(c.isspace() for c in key):
            raise UserError("an API key may not be empty or hold spaces")
    return tuple(found)
