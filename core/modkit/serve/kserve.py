"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST protocol) over the served model.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/1]``
(metadata), ``.../ready``, ``POST .../infer``. Inputs are BYTES tensors named after the task's
fields (``text``; ``text_pair``; ``choices`` as a [batch, k] tensor; ``source``), in JSON or in
the binary tensor extension that Triton clients send by default (``Inference-Header-Content-Length``).
The request's ``parameters`` are the task's run options (``max_new_tokens``, ``temperature``...).

Outputs are the results of ``modkit run --json`` as typed tensors, one row per input: a text is
BYTES [batch]; a number INT64 or FP32 [batch]; a mapping of label to probability FP32
[batch, labels] in label order; a list of numbers [batch, longest], token ids padded with -1
and other numbers with NaN; the input fields themselves are not sent back. Errors are
``{"error": "..."}`` with 400 (bad request), 404 (no such model or version), 413, 503, 504.
"""
from __future__ import annotations

import json
import math
import struct
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modkit.serve.service import BadRequest, Service, internal_error, load_json, read_body

HEADER_LENGTH = "Inference-Header-Content-Length"
VERSION = "1"  # an artifact is one version of one model
#: request parameters the protocol or Triton's clients reserve; they are not task options
RESERVED = {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout",
            "headers"}
_NUMPY = {"BOOL": np.bool_, "INT64": np.int64, "FP32": np.float32}


def _error(status: int, message: str) -> JSONResponse:
    # the protocol knows no 422: a request the task refuses is a bad request
    return JSONResponse({"error": message}, status_code=400 if status == 422 else status)


def routes(service: Service) -> list[Route]:
    runtime, task = service.runtime, service.runtime.task_impl
    fields = tuple(task.input_fields) + tuple(f for f in task.optional_fields if f not in task.input_fields)
    described: dict[str, Any] = {}

    def ready() -> bool:
        loop = service.batcher.loop_task
        return loop is not None and not loop.done()

    def model_or_error(request: Request) -> JSONResponse | None:
        name, version = request.path_params["name"], request.path_params.get("version", VERSION)
        if name != service.name:
            return _error(404, f"unknown model {name!r}; this server serves {service.name!r}")
        if version != VERSION:
            return _error(404, f"model {name!r} has no version {version!r}; its only version is {VERSION!r}")
        return None

    async def server_metadata(request: Request) -> JSONResponse:
        return JSONResponse({"name": "modkit", "version": _modkit_version(), "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return Response(status_code=200)

    async def server_ready(request: Request) -> Response:
        return Response(status_code=200 if ready() else 503)

    async def model_ready(request: Request) -> Response:
        return model_or_error(request) or Response(status_code=200 if ready() else 503)

    async def metadata(request: Request) -> JSONResponse:
        if (problem := model_or_error(request)) is not None:
            return problem
        if "outputs" not in described:
            described["outputs"] = await _probe_outputs(service, fields)
        return JSONResponse({
            "name": service.name, "versions": [VERSION], "platform": "modkit_onnxruntime",
            "inputs": [{"name": f, "datatype": "BYTES", "shape": [-1, -1] if f == "choices" else [-1]}
                       for f in fields],
            "outputs": described["outputs"],
            "parameters": {"task": runtime.task["task"],
                           "options": sorted(runtime.task_component.options.model_fields)}})

    async def infer(request: Request) -> Response:
        if (problem := model_or_error(request)) is not None:
            return problem
        try:
            body = await read_body(request, service.limits.max_body_bytes)
            doc, rows, wanted, binary = _read_request(body, request.headers.get(HEADER_LENGTH), fields)
            records, options = service.check({"inputs": rows, **doc["params"]})
            request.state.inputs = len(records)
            results = await service.infer(records, options)
            tensors = [t for t in to_tensors(results, task.input_fields) if not wanted or t["name"] in wanted]
            missing = sorted(set(wanted) - {t["name"] for t in tensors})
            if missing:
                raise BadRequest(400, f"unknown output {missing[0]!r}; outputs: "
                                      f"{', '.join(t['name'] for t in to_tensors(results, task.input_fields))}")
        except BadRequest as e:
            return _error(e.status, str(e))
        except Exception as e:  # a fault of modkit or a plugin: the server stays up, the log keeps the traceback
            return _error(500, internal_error(request, e))
        answer = {"model_name": service.name, "model_version": VERSION,
                  "id": doc.get("id", request.state.request_id)}
        return _response(answer, tensors, {n for n in (t["name"] for t in tensors) if binary(n)})

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [Route("/v2", server_metadata), Route("/v2/health/live", live), Route("/v2/health/ready", server_ready),
            *(r for prefix in (model, versioned) for r in (
                Route(prefix, metadata), Route(prefix + "/ready", model_ready),
                Route(prefix + "/infer", infer, methods=["POST"])))]


def _modkit_version() -> str:
    try:  # (not modkit.__version__: importing the package's top would reach the build)
        return version("modkit")
    except PackageNotFoundError:
        return "unknown"


def _read_request(body: bytes, header_length: str | None, fields: tuple[str, ...]):
    """(the JSON header with the task options under "params", the records, the outputs asked
    for, whether an output goes back binary), or BadRequest naming the problem."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(400, f"{HEADER_LENGTH} {header_length!r} is not a length within the body")
        head, blob = body[:int(header_length)], body[int(header_length):]
    else:
        head, blob = body, b""
    doc = load_json(head)
    if not isinstance(doc, dict):
        raise BadRequest(400, 'the inference request must be a JSON object {"inputs": [...]}')
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(400, '"parameters" must be an object')
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(400, '"inputs" must be a non-empty list of tensors')
    columns, batch, offset = {}, None, 0
    for n, tensor in enumerate(inputs):
        values, offset = _read_tensor(tensor, n, blob, offset, fields)
        rows = len(values)
        if batch is not None and rows != batch:
            raise BadRequest(400, f"input {tensor['name']!r}: {rows} rows, but the first input has {batch}")
        batch, columns[tensor["name"]] = rows, values
    if offset != len(blob):
        raise BadRequest(400, f"{len(blob) - offset} bytes of binary data no input claims")
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise BadRequest(400, '"outputs" must be a list of {"name": ...} objects')
    as_binary = {o["name"]: bool((o.get("parameters") or {}).get("binary_data")) for o in outputs}
    all_binary = bool(params.get("binary_data_output"))
    records = [{name: values[i] for name, values in columns.items()} for i in range(batch)]
    options = {k: v for k, v in params.items() if k not in RESERVED}
    return ({**doc, "params": options}, records, list(as_binary),
            lambda name: as_binary.get(name, all_binary))


def _read_tensor(tensor: Any, n: int, blob: bytes, offset: int, fields: tuple[str, ...]):
    """One input's rows (a text each, or a list of texts for a [batch, k] tensor) and where the
    next binary tensor starts."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise BadRequest(400, f"inputs[{n}]: a tensor needs a \"name\"")
    name = tensor["name"]
    if name not in fields:
        raise BadRequest(400, f"unknown input {name!r}; this model takes {', '.join(fields)}")
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(400, f"input {name!r}: datatype {tensor.get('datatype')!r}; expected 'BYTES' (texts)")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise BadRequest(400, f"input {name!r}: shape {shape!r}; expected [batch] or [batch, k], sizes >= 1")
    count = math.prod(shape)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(blob):
            raise BadRequest(400, f"input {name!r}: binary_data_size {size!r} runs past the body")
        flat = _unpack_bytes(blob[offset:offset + size], count, name)
        offset += size
    else:
        flat = _flatten(tensor.get("data"), name)
    if len(flat) != count:
        raise BadRequest(400, f"input {name!r}: shape {shape} holds {count} elements, the data {len(flat)}")
    if not all(isinstance(x, str) for x in flat):
        raise BadRequest(400, f"input {name!r}: every element must be a text")
    if len(shape) == 1 or shape[1] == 1:
        return flat, offset
    k = shape[1]
    return [flat[i:i + k] for i in range(0, count, k)], offset


def _flatten(data: Any, name: str) -> list:
    if not isinstance(data, list):
        raise BadRequest(400, f"input {name!r}: \"data\" must be a list (or the tensor binary)")
    flat: list = []
    stack = [iter(data)]
    while stack:  # row-major, without recursion
        item = next(stack[-1], StopIteration)
        if item is StopIteration:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


def _unpack_bytes(blob: bytes, count: int, name: str) -> list[str]:
    """BYTES elements in the binary extension: each a 4-byte little-endian length, then the bytes."""
    out, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise BadRequest(400, f"input {name!r}: binary data cut inside an element's length")
        (length,) = struct.unpack_from("<I", blob, at)
        if at + 4 + length > len(blob):
            raise BadRequest(400, f"input {name!r}: binary element of {length} bytes runs past its data")
        try:
            out.append(blob[at + 4:at + 4 + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(400, f"input {name!r}: element {len(out)} is not UTF-8 text") from None
        at += 4 + length
    return out


def to_tensors(results: list[dict[str, Any]], echoed: tuple[str, ...]) -> list[dict[str, Any]]:
    """The results as output tensors {name, datatype, shape, array}, one row per result; the
    input fields (``echoed``) left out."""
    tensors = []
    for name in results[0]:
        if name in echoed:
            continue
        values = [r.get(name) for r in results]
        first = values[0]
        if isinstance(first, bool):
            dtype, array = "BOOL", np.array(values, np.bool_)
        elif isinstance(first, int):
            dtype, array = "INT64", np.array(values, np.int64)
        elif isinstance(first, float):
            dtype, array = "FP32", np.array(values, np.float32)
        elif isinstance(first, dict) and all(isinstance(x, (int, float)) for x in first.values()):
            dtype, array = "FP32", np.array([list(v.values()) for v in values], np.float32)
        elif isinstance(first, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                             for v in values for x in v):
            ints = all(isinstance(x, int) for v in values for x in v)
            width = max((len(v) for v in values), default=0)
            dtype = "INT64" if ints else "FP32"
            array = np.full((len(values), width), -1 if ints else np.nan, _NUMPY[dtype])
            for i, v in enumerate(values):
                array[i, :len(v)] = v
        elif isinstance(first, str):
            dtype, array = "BYTES", np.array(values, object)
        else:  # anything else (a tagger's spans...): one JSON text per row
            dtype, array = "BYTES", np.array([json.dumps(v, ensure_ascii=False) for v in values], object)
        tensors.append({"name": name, "datatype": dtype, "shape": list(array.shape), "array": array})
    return tensors


def _response(answer: dict[str, Any], tensors: list[dict[str, Any]], binary: set[str]) -> Response:
    outputs, blobs = [], []
    for t in tensors:
        out = {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
        if t["name"] in binary:
            blob = _pack(t["array"], t["datatype"])
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            flat = t["array"].reshape(-1)
            out["data"] = [None if isinstance(x, float) and math.isnan(x) else x
                           for x in flat.tolist()] if t["datatype"] == "FP32" else flat.tolist()
        outputs.append(out)
    head = json.dumps({**answer, "outputs": outputs}).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})


def _pack(array: np.ndarray, dtype: str) -> bytes:
    if dtype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(x).encode("utf-8") for x in array.reshape(-1)))
    return np.ascontiguousarray(array, _NUMPY[dtype]).astype(np.dtype(_NUMPY[dtype]).newbyteorder("<")).tobytes()


async def _probe_outputs(service: Service, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The outputs' names, datatypes and shapes, from one short run of a placeholder input
    (none listed when the task refuses the placeholder)."""
    task = service.runtime.task_impl
    record = {f: ["a", "b"] if f == "choices" else "a" for f in task.input_fields}
    short = {"max_new_tokens": 1} if "max_new_tokens" in service.runtime.task_component.options.model_fields else {}
    try:
        records, options = service.check({"inputs": [record], **short})
        results = await service.infer(records, options)
    except Exception:  # a task whose inputs a placeholder cannot stand for
        return []

    def shape(t: dict[str, Any]) -> list[int]:
        if t["array"].ndim == 1:
            return [-1]
        labels = isinstance(results[0][t["name"]], dict)  # one column per label: a fixed width
        return [-1, t["shape"][1] if labels else -1]

    return [{"name": t["name"], "datatype": t["datatype"], "shape": shape(t)}
            for t in to_tensors(results, task.input_fields)]
