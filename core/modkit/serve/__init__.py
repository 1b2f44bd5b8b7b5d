"""`modkit serve`: an artifact as an HTTP service (uvicorn + Starlette, the optional extra ``serve``).

With ``workers`` > 1 uvicorn starts that many processes, each loading the artifact through
:func:`app_from_environment` (the settings travel in an environment variable).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from modkit.errors import UserError

ENV = "MODKIT_SERVE_SETTINGS"


def _need_server():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("modkit serve needs uvicorn and starlette: pip install 'modkit[serve]'") from None
    return uvicorn


#: inputs per graph call: on a CPU a call costs about its tokens, and batches past ~1,000 tokens
#: run slower per token (their activations leave the cache), so batches stay small there; a
#: GPU call has a fixed cost that bigger batches share (docs/benchmarks.md, Deployment)
DEFAULT_MAX_BATCH = {"cpu": 8, "cuda": 32}


def serve(artifact: str | Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          provider: str = "cpu", precision: str = "fp32", threads: int | None = None, registry_path: str | None = None,
          log_level: str = "info", api_keys: tuple[str, ...] = (), api_key_files: tuple[str, ...] = (),
          cors_origins: tuple[str, ...] = (), model_name: str | None = None, chat_template: str | None = None,
          **limits) -> None:
    """Load the artifact (so a bad one fails here, exit 2), then serve it until SIGINT/SIGTERM;
    requests in flight finish first."""
    from modkit.registry import get_registry
    from modkit.runtime import Runtime
    from modkit.serve.app import Limits
    from modkit.serve.chat import load_chat_template
    from modkit.serve.metrics import create_table, remove_table
    from modkit.serve.middleware import read_api_keys

    uvicorn = _need_server()
    if limits.get("max_batch") is None:
        limits["max_batch"] = DEFAULT_MAX_BATCH[provider]
    if chat_template:
        load_chat_template(chat_template)  # a bad template fails here, before listening
    settings = {"artifact": str(artifact), "provider": provider, "precision": precision,
                "registry_path": registry_path,
                "threads": threads or max(1, (os.cpu_count() or 1) // workers), "limits": asdict(Limits(**limits)),
                "access": {"api_keys": read_api_keys(api_keys, api_key_files), "cors_origins": cors_origins,
                           "model_name": model_name, "chat_template": chat_template, "log_level": log_level}}
    runtime = Runtime(artifact, provider=provider, precision=precision, threads=settings["threads"],
                      spin=False, registry=get_registry(registry_path))
    # uvicorn's access log is replaced by the JSON one, which carries the request ids
    common = dict(host=host, port=port, log_level=log_level, access_log=False,
                  timeout_graceful_shutdown=int(settings["limits"]["timeout_s"]) + 5)
    if workers == 1:
        uvicorn.run(_create(runtime, settings), **common)
        return
    # counters shared by the workers, a row each, and spare rows: a worker that replaces a dead
    # one adopts its row (modkit.serve.metrics)
    settings["access"]["metrics_table"] = create_table(workers + 4)
    try:
        os.environ[ENV] = json.dumps(settings)
        uvicorn.run("modkit.serve:app_from_environment", factory=True, workers=workers, **common)
    finally:
        remove_table(settings["access"]["metrics_table"])


def _create(runtime, settings: dict):
    from modkit.serve.app import Access, Limits, create_app
    from modkit.serve.chat import load_chat_template

    access = dict(settings["access"])
    access["chat_template"] = load_chat_template(access["chat_template"]) if access["chat_template"] else None
    access = Access(**{k: tuple(v) if isinstance(v, list) else v for k, v in access.items()})
    return create_app(runtime, Limits(**settings["limits"]), access)


def app_from_environment():
    """The app of one worker process, from the settings :func:`serve` left in the environment."""
    from modkit.registry import get_registry
    from modkit.runtime import Runtime

    s = json.loads(os.environ[ENV])
    runtime = Runtime(s["artifact"], provider=s["provider"], precision=s["precision"], threads=s["threads"],
                      spin=False, registry=get_registry(s["registry_path"]))
    return _create(runtime, s)
