"""``hf:ORG/NAME[@REVISION]``: a model on the Hugging Face Hub, read through its local cache.

A spec's ``from`` (backbone, tokenizer, PEFT folder) may name a Hub repository instead of a
folder. ``huggingface_hub`` resolves it (``snapshot_download``) into its cache
(``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) and gives back the snapshot folder,
which is read as a local folder would be; the commit it resolved to goes into the manifest.
With ``HF_HUB_OFFLINE=1`` nothing is fetched: a repository missing from the cache is an error
saying how to fetch it. Torch-free; ``huggingface_hub`` is imported only for an ``hf:`` name.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from modkit.errors import MissingExtraError, UserError

PREFIX = "hf:"
_NAME = re.compile(r"^hf:([A-Za-z0-9][\w.-]*/)?[\w.-]+(@[\w./-]+)?$")
#: what a modkit checkpoint, tokenizer or PEFT folder needs of a repository (not its .bin, .h5, .msgpack)
FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


@dataclass(frozen=True)
class HubFolder:
    """A resolved ``hf:`` name: the snapshot folder and what the manifest records."""

    path: Path
    repo_id: str
    requested: str  # the revision asked for (a branch, tag or commit; "main" by default)
    revision: str  # the commit hash it resolved to

    def record(self) -> dict[str, str]:
        return {"repo_id": self.repo_id, "requested": self.requested, "revision": self.revision}


def is_hub_name(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def check_name(value: str) -> str | None:
    """What is wrong with an ``hf:`` name, or None."""
    if _NAME.match(value):
        return None
    return f"{value!r} is not a Hugging Face name: expected hf:ORG/NAME or hf:ORG/NAME@REVISION"


def split_name(value: str) -> tuple[str, str]:
    """``hf:org/name@rev`` -> ("org/name", "rev"); the revision defaults to "main"."""
    repo, _, revision = value[len(PREFIX):].partition("@")
    return repo, revision or "main"


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, read now (its own constant is read at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def cache_folder() -> Path:
    from huggingface_hub import constants

    home = os.environ.get("HF_HOME")
    return Path(os.environ.get("HF_HUB_CACHE") or (Path(home) / "hub" if home else constants.HF_HUB_CACHE))


def resolve(value: str, *, repo_type: str = "model", files: list[str] = FILES) -> HubFolder:
    """The snapshot folder of ``hf:ORG/NAME[@REVISION]`` (a model, or with ``repo_type =
    "dataset"`` a dataset repository): from the cache, fetched first (only ``files``) unless
    HF_HUB_OFFLINE is set. Raise UserError (exit 2) if it cannot be had, saying how to get it."""
    problem = check_name(value)
    if problem:
        raise UserError(problem)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError:
        raise MissingExtraError(f"{value}: hf: names need huggingface_hub: pip install 'modkit[hub]'") from None
    repo, revision = split_name(value)
    cache = cache_folder()
    try:
        folder = Path(snapshot_download(repo, repo_type=repo_type, revision=revision, cache_dir=cache,
                                        local_files_only=offline(), allow_patterns=files))
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise UserError(f"{value}: no such repository, or no access to it ({type(e).__name__})") from None
    except RevisionNotFoundError:
        raise UserError(f"{value}: {repo} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hub cannot be reached"
        raise UserError(
            f"{value}: {repo} at {revision!r} is not in the Hugging Face cache ({cache}) and {why}; fetch it "
            f"where the Hub can be reached with `hf download {repo} --revision {revision}"
            f"{' --repo-type dataset' if repo_type == 'dataset' else ''}` (same HF_HUB_CACHE), "
            "then build again") from None
    return HubFolder(folder, repo, revision, folder.name)  # snapshots/<commit hash>


__all__ = ["HubFolder", "PREFIX", "is_hub_name", "check_name", "split_name", "resolve", "offline", "cache_folder"]
