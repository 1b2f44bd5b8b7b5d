"""Reading a build artifact: manifest, checksums, and the torch model it holds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modkit.errors import ArtifactError
from modkit.fileio import sha256_file

MANIFEST_VERSION = 1
#: the precisions a graph can ship in; fp32 is the exported graph itself
PRECISIONS = ("fp32", "int8")


def graph_file(name: str, precision: str = "fp32") -> str:
    """The file of graph ``name`` (``model.onnx``) in ``precision``: ``model.int8.onnx`` for int8."""
    return name if precision == "fp32" else name[: -len(".onnx")] + f".{precision}.onnx"


def read_manifest(folder: Path, *, verify: bool = True) -> dict[str, Any]:
    """The artifact's manifest; with ``verify``, every listed file's sha256 is checked."""
    folder = Path(folder)
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: not a modkit artifact (no manifest.json)") from None
    except ValueError as e:
        raise ArtifactError(f"{path}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "modkit-artifact":
        raise ArtifactError(f"{path}: not a modkit artifact manifest")
    if verify:
        for name, digest in manifest.get("files", {}).items():
            f = folder / name
            if not f.exists():
                raise ArtifactError(f"{f}: missing (listed in the manifest)")
            if sha256_file(f) != digest:
                raise ArtifactError(f"{f}: sha256 does not match the manifest; the file is corrupt or was changed")
    return manifest
