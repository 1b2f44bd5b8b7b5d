"""Reading a build artifact: manifest, checksums, and the torch model it holds."""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from modkit.errors import ArtifactError
from modkit.fileio import sha256_file

#: the artifact format this modkit writes and the newest it reads; raise it when a change would
#: make an older modkit misread a new artifact
MANIFEST_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_READ_BY_MODKIT = (".onnx", ".safetensors", ".json")  # what a listing may not leave out

#: the precisions a graph can ship in; fp32 is the exported graph itself (fp16 is for GPUs)
PRECISIONS = ("fp32", "int8", "fp16")


def graph_file(name: str, precision: str = "fp32") -> str:
    """The file of graph ``name`` (``model.onnx``) in ``precision``: ``model.int8.onnx`` for int8,
    ``model.fp16.onnx`` for fp16."""
    return name if precision == "fp32" else name[: -len(".onnx")] + f".{precision}.onnx"


def is_artifact_path(name: str) -> bool:
    """Whether ``name`` is a file inside an artifact: a relative POSIX path (``model.onnx``,
    ``checkpoints/stage1-step000006.safetensors``) that cannot climb out (no ``..``)."""
    path = PurePosixPath(name)
    return (bool(name) and "\\" not in name and not path.is_absolute() and ".." not in path.parts
            and path.as_posix() == name)


def read_manifest(folder: Path, *, verify: bool = True) -> dict[str, Any]:
    """The artifact's manifest; with ``verify``, every listed file's sha256 is checked.

    ``version`` and ``files`` are required: an artifact of a newer format is refused with a
    clear message, and a manifest cannot switch the checks off by leaving ``files`` out.
    """
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
    _check_version(manifest, path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or not all(
            isinstance(name, str) and is_artifact_path(name) and isinstance(digest, str) and _SHA256.match(digest)
            for name, digest in files.items()):
        raise ArtifactError(f"{path}: 'files' must map every file of the artifact to its sha256; "
                            "the manifest is corrupt or was edited")
    if verify:
        for name, digest in files.items():
            f = folder / name
            if not f.is_file():
                raise ArtifactError(f"{f}: missing (listed in the manifest)")
            if sha256_file(f) != digest:
                raise ArtifactError(f"{f}: sha256 does not match the manifest; the file is corrupt or was changed")
        unlisted = sorted(name for name in (f.relative_to(folder).as_posix() for f in folder.rglob("*")
                                            if f.is_file() and f.suffix in _READ_BY_MODKIT)
                          if name != "manifest.json" and name not in files)
        if unlisted:
            raise ArtifactError(f"{folder}: {', '.join(unlisted)} not listed in the manifest's files; the "
                                "artifact was changed after it was built")
    return manifest


def _check_version(manifest: dict[str, Any], path: Path) -> None:
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{path}: no valid format 'version' (got {version!r}); the manifest is corrupt")
    if version > MANIFEST_VERSION:
        made_by = manifest.get("modkit_version", "a newer modkit")
        raise ArtifactError(f"{path}: artifact format version {version} (written by modkit {made_by}); this "
                            f"modkit reads up to version {MANIFEST_VERSION}: upgrade modkit to use it")
