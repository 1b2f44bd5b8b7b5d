"""modkit: pretrained transformer language models from named, pluggable parts.

Importing modkit is cheap and torch-free; heavy parts load on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from modkit.errors import (
    ArtifactError,
    DuplicateComponentError,
    ModkitError,
    PluginLoadError,
    SpecError,
    UnknownComponentError,
    UserError,
)
from modkit.interfaces import Backbone, BackboneCapabilities, CheckpointFormat, Objective, PeftMethod, Task, Tokenizer
from modkit.manifest import Manifest, TaskRecord
from modkit.objectives import ObjectiveExport, ObjectiveHead, ObjectiveReader
from modkit.options import Options
from modkit.registry import get_registry, load_registry
from modkit.tokenization import load_tokenizer

__version__ = "0.1.0"

#: marks a plugin's hook implementations: ``@modkit.hookimpl``
hookimpl = pluggy.HookimplMarker("modkit")

if TYPE_CHECKING:
    from pathlib import Path


def load_model(path: str | Path, **kwargs: Any):
    """A modkit artifact folder or a Hugging Face checkpoint folder -> a torch model."""
    from modkit.builder.hf.convert import load_model as _load_model

    return _load_model(path, **kwargs)


def export_peft(model, dest: str | Path, **kwargs: Any):
    """Write each PEFT method on ``model`` (or artifact folder) as a Hugging Face PEFT folder
    ``dest/<method>``, as ``modkit export-peft`` does; returns the folders."""
    from modkit.builder.hf.peft_folders import export_peft as _export_peft

    return _export_peft(model, dest, **kwargs)


def build(spec: str | Path, out: str | Path, **kwargs: Any):
    """Run a spec's stages and write the artifact, as ``modkit build`` does."""
    from modkit.builder.build import build as _build

    return _build(spec, out, **kwargs)


def preview(spec: str | Path, stage: int = 0, n: int = 10, **kwargs: Any):
    """The training examples of ``stages[stage]``, as ``modkit preview`` prints them (an iterator
    of dicts: original_ids, input_ids, labels..., and the decoded texts)."""
    from modkit.builder.preview import preview as _preview

    return _preview(spec, stage=stage, n=n, **kwargs)


__all__ = [
    "ArtifactError", "Backbone", "BackboneCapabilities", "CheckpointFormat", "DuplicateComponentError",
    "Manifest", "ModkitError", "Objective", "ObjectiveExport", "ObjectiveHead", "ObjectiveReader",
    "Options", "PeftMethod", "PluginLoadError", "SpecError", "Task", "TaskRecord", "Tokenizer",
    "UnknownComponentError", "UserError", "build", "export_peft", "get_registry", "hookimpl",
    "load_model", "load_registry", "load_tokenizer", "preview",
]
