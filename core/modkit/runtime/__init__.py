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
from modkit.generation_config import generation_record
from modkit.manifest import Manifest, TaskRecord
from modkit.options import no_such_key
from modkit.runtime.artifact import PRECISIONS, graph_file
from modkit.runtime.sessions import (PROVIDERS, greedy, greedy_with_past, make_session, pad_ids, softmax,
                                     strip_after_eos)
from modkit.tokenization import artifact_tokenizer


DEFAULT_BATCH_SIZE = 32
MAX_PADDING = {"cpu": 0.25, "cuda": 1.0}


class Runtime:
    """An artifact loaded for inference: its manifest, tokenizer, task and ONNX sessions."""

    def __init__(self, folder: str | Path, *, provider: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, spin: bool = True, registry=None):
        from modkit.registry import get_registry

        self.folder = Path(folder)
        self.provider, self.threads, self.spin = provider, threads, spin
        #: how much padding a batch may add, as a fraction of its inputs' own sizes: on a CPU a
        #: graph call costs about its padded tokens, so padding is lost time and batches stay
        #: tight; on a GPU a call's fixed cost dominates and fewer, fuller calls pay
        self.max_padding = MAX_PADDING.get(provider, MAX_PADDING["cpu"])
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        #: the artifact's manifest (every listed file's sha256 checked)
        self.manifest: Manifest = Manifest.read(self.folder)
        #: the manifest's task record: the task name and what serving it needs
        self.task: TaskRecord = self.manifest.task
        #: the generation defaults generating tasks apply where a request leaves an option unset
        #: (see :mod:`modkit.generation_config`); empty for artifacts that record none
        self.generation: dict[str, Any] = generation_record(self.manifest.generation or {},
                                                            str(self.folder / "manifest.json"))
        registry = registry or get_registry()
        self.tokenizer = artifact_tokenizer(self.folder, self.manifest, registry)
        #: how many positions input tokens may take (the backbone's declared max_positions less
        #: an input prompt's); None for relative positions (T5)
        self.max_positions = self.manifest.components.backbone.position_limit()
        self._sessions: dict[str, Any] = {}
        self.task_component = _task_component(registry, self.manifest, self.folder)
        task_class = self.task_component.load()
        self.task = self.manifest.task.typed(task_class.record, str(self.folder / "manifest.json"))
        self.task_impl = task_class(self)
        for graph in self.task_impl.graphs:  # open them now: a missing graph fails at load
            self.session(graph)

    def session(self, name: str):
        """The onnxruntime session of the artifact's ONNX file ``name`` (in the runtime's
        precision: ``model.int8.onnx`` for ``model.onnx`` in int8), opened once."""
        if name not in self._sessions:
            path = self.folder / graph_file(name, self.precision)
            if self.precision != "fp32" and not path.exists() and (self.folder / name).exists():
                raise ArtifactError(f"{path}: missing; this artifact has no {self.precision} graphs (build it "
                                    f'with [export] quantize = "{self.precision}")')
            self._sessions[name] = make_session(path, self.provider, threads=self.threads, spin=self.spin)
        return self._sessions[name]

    def has_graph(self, name: str) -> bool:
        return (self.folder / graph_file(name, self.precision)).exists()

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
            task, fields = self.task["task"], list(self.task_component.options.model_fields)
            unknown = [no_such_key(task, str(err["loc"][0]), fields) for err in e.errors()
                       if err["type"] == "extra_forbidden"]
            problems = [f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}" for err in e.errors()
                        if err["type"] != "extra_forbidden"]
            raise UserError("; ".join(unknown + ([f"options for task {task!r}: {'; '.join(problems)}"]
                                                 if problems else []))) from None

    def run(self, inputs: Sequence[str | dict[str, Any]], *, batch_size: int = DEFAULT_BATCH_SIZE,
            **options: Any) -> list[dict[str, Any]]:
        """One result per input (a text, or a record with the task's fields), in input order.

        Inputs are sorted by size and run in batches of at most ``batch_size`` that pad little
        (see :func:`batches_by_size`)."""
        return self.run_validated(self.records(inputs), self.options(**options), batch_size=batch_size)

    def run_validated(self, records: list[dict[str, Any]], options, *,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, Any]]:
        """:meth:`run` for records checked by :meth:`records` and options made by :meth:`options`."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        sizes = [max(self.task_impl.size(r), 1) for r in records]
        results: list[Any] = [None] * len(records)
        for batch in batches_by_size(sizes, batch_size, self.max_padding):
            for i, result in zip(batch, self.task_impl.run([records[i] for i in batch], options)):
                results[i] = result
        return results


def batches_by_size(sizes: list[int], batch_size: int, max_padding: float) -> list[list[int]]:
    """Indices of ``sizes`` in batches of like size: sorted by size, cut at ``batch_size`` and
    wherever padding every member to the batch's longest would cost more than ``max_padding``
    (a fraction) beyond the members' own sizes."""
    order = sorted(range(len(sizes)), key=sizes.__getitem__)
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0
    for i in order:
        padded = sizes[i] * (len(batch) + 1)  # sorted ascending: the newcomer is the longest
        if batch and (len(batch) == batch_size or padded > (1 + max_padding) * (total + sizes[i])):
            batches.append(batch)
            batch, total = [], 0
        batch.append(i)
        total += sizes[i]
    if batch:
        batches.append(batch)
    return batches


def _task_component(registry, manifest: Manifest, folder: Path):
    name = manifest.task.task
    try:
        return registry.get("task", name)
    except UnknownComponentError:
        obj = manifest.components.stages[-1].objective
        raise ArtifactError(
            f"{folder}: task {name!r} is served by the plugin that registers it; the artifact's objective "
            f"{obj.name!r} came from plugin {obj.plugin!r} {obj.version}, which is not installed "
            f"here (or registers no task {name!r}). Install that plugin; `modkit list --kind task` shows "
            f"the tasks served here.") from None


__all__ = ["PROVIDERS", "Runtime", "batches_by_size", "greedy", "greedy_with_past", "make_session", "pad_ids", "softmax",
           "strip_after_eos"]
