"""Serving an artifact with onnxruntime: no torch imported here or below.

>>> rt = Runtime("out/")                  # checks every file's sha256 first
>>> rt.run(["some text"])                 # whatever the artifact's task does, per the manifest

What a task does is not written here: the task component named by the manifest (registered by
a plugin through ``modkit_register_tasks``) turns input records into graph inputs and graph
outputs into results; see :class:`modkit.interfaces.Task`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pydantic

from modkit.errors import ArtifactError, UnknownComponentError, UserError
from modkit.runtime.artifact import read_manifest
from modkit.runtime.sessions import (PROVIDERS, greedy, greedy_with_past, make_session, pad_ids, softmax,
                                     strip_after_eos)
from modkit.tokenization import load_tokenizer


class Runtime:
    """An artifact loaded for inference: its manifest, tokenizer, task and ONNX sessions."""

    def __init__(self, folder: str | Path, *, provider: str = "cpu", registry=None):
        from modkit.registry import get_registry

        self.folder = Path(folder)
        self.provider = provider
        self.manifest = read_manifest(self.folder)
        #: the objective's describe(): the task name and what serving it needs
        self.task: dict[str, Any] = self.manifest["task"]
        registry = registry or get_registry()
        self.tokenizer = load_tokenizer(self.folder, registry=registry)
        options = self.manifest["components"]["backbone"]["options"]
        self.max_positions = options.get("n_positions")  # None for relative positions (T5)
        self._sessions: dict[str, Any] = {}
        self.task_component = _task_component(registry, self.manifest, self.folder)
        self.task_impl = self.task_component.load()(self)
        for graph in self.task_impl.graphs:  # open them now: a missing graph fails at load
            self.session(graph)

    def session(self, name: str):
        """The onnxruntime session of the artifact's ONNX file ``name``, opened once."""
        if name not in self._sessions:
            self._sessions[name] = make_session(self.folder / name, self.provider)
        return self._sessions[name]

    def has_graph(self, name: str) -> bool:
        return (self.folder / name).exists()

    def records(self, inputs: Sequence[str | dict[str, Any]]) -> list[dict[str, Any]]:
        """Texts become ``{"text": ...}``; every record must hold the task's input fields."""
        records = [{"text": x} if isinstance(x, str) else x for x in inputs]
        for n, record in enumerate(records, 1):
            if not isinstance(record, dict):
                raise UserError(f"input {n}: expected a text or an object, got {type(record).__name__}")
            problem = self.task_impl.check(record)
            if problem:
                raise UserError(f"input {n}: {problem} (task {self.task['task']!r})")
        return records

    def options(self, **given: Any):
        """The task's run options, validated; unset (None) values keep the task's defaults."""
        try:
            return self.task_component.options.model_validate({k: v for k, v in given.items() if v is not None})
        except pydantic.ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}" for err in e.errors())
            raise UserError(f"options for task {self.task['task']!r}: {problems}") from None

    def run(self, inputs: Sequence[str | dict[str, Any]], **options: Any) -> list[dict[str, Any]]:
        """One result per input (a text, or a record with the task's fields)."""
        records = self.records(inputs)
        if not records:
            return []
        return self.task_impl.run(records, self.options(**options))


def _task_component(registry, manifest: dict[str, Any], folder: Path):
    name = manifest["task"]["task"]
    try:
        return registry.get("task", name)
    except UnknownComponentError:
        obj = manifest["components"]["stages"][-1]["objective"]
        raise ArtifactError(
            f"{folder}: task {name!r} is served by the plugin that registers it; the artifact's objective "
            f"{obj['name']!r} came from plugin {obj['plugin']!r} {obj['version']}, which is not installed "
            f"here (or registers no task {name!r}). Install that plugin; `modkit list --kind task` shows "
            f"the tasks served here.") from None


__all__ = ["PROVIDERS", "Runtime", "greedy", "greedy_with_past", "make_session", "pad_ids", "softmax",
           "strip_after_eos"]
