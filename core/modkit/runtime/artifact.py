"""Reading a build artifact: its manifest (the schema lives in :mod:`modkit.manifest`) and the
files of its graphs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modkit.manifest import MANIFEST_VERSION, Manifest, is_artifact_path

#: the precisions a graph can ship in; fp32 is the exported graph itself (fp16 is for GPUs)
PRECISIONS = ("fp32", "int8", "fp16")


def graph_file(name: str, precision: str = "fp32") -> str:
    """The file of graph ``name`` (``model.onnx``) in ``precision``: ``model.int8.onnx`` for int8,
    ``model.fp16.onnx`` for fp16."""
    return name if precision == "fp32" else name[: -len(".onnx")] + f".{precision}.onnx"


def read_manifest(folder: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The artifact's manifest as its JSON object, read and checked through
    :meth:`modkit.manifest.Manifest.read` (with ``verify``, every listed file's sha256)."""
    return Manifest.read(folder, verify=verify).to_json()


__all__ = ["MANIFEST_VERSION", "PRECISIONS", "Manifest", "graph_file", "is_artifact_path", "read_manifest"]
