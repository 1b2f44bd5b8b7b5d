"""Objective contract, part by part: reader batches -> head loss -> backward, logits, export inputs,
task record and graphs, a served task."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

from modkit.manifest import TaskRecord
from modkit.nn.model import ModkitModel
from modkit.objectives import as_parts


def _batch(reader, data, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    return reader.batch(data, batch_size, torch.Generator().manual_seed(seed))


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_objective(objective_class, options, backbone, tokenizer, data_path, *, seq_len: int = 16,
                    batch_size: int = 2, seed: int = 0, registry=None, export: bool = True) -> None:
    """``objective_class(options, backbone, tokenizer)`` and its parts against their contract
    (an objective of the old one-class contract is checked through its adapter):

    - ``check_backbone`` accepts ``backbone`` (the caller picks a pair that should work);
    - the reader's ``load_data(data_path, seq_len)`` then ``batch``: tensors with
      ``batch_size`` rows, the same for the same generator whatever torch's global seed
      (builds are reproducible);
    - the head is a ``torch.nn.Module``; its ``loss``: a finite scalar and figures that are
      detached scalar tensors (no ``.item()`` per micro-batch); ``backward`` reaches the
      backbone; the same seed gives the same head and the same loss (a new objective, as a
      resumed build makes, after its reader's own ``load_data``);
    - the reader's ``export_inputs``: ``input_ids``/``attention_mask`` the model's ``logits``
      accept, one row of logits per input row;
    - the export's ``task_record(seq_len)``: a :class:`modkit.manifest.TaskRecord` as JSON,
      ``task`` = the class's ``task``, a task component registered for it, ``max_length``
      unset or the ``seq_len`` it is given (not a length ``load_data`` left behind);
    - (``export``) the export's ``graphs`` returns figures with ``max_abs_diff`` and writes
      every graph the serving task opens.
    """
    from modkit.registry import get_registry

    registry = registry or get_registry()
    name = objective_class.__name__
    objective_class.check_backbone(backbone)
    legacy = getattr(objective_class, "legacy", False)

    def fresh():
        torch.manual_seed(seed)
        return as_parts(objective_class(options, backbone, tokenizer))

    objective = fresh()
    data = objective.reader.load_data(Path(data_path), seq_len)
    first = _check_reader(name, objective.reader, data, batch_size, seed)
    loss = _check_head(name, objective, backbone, first, seed, legacy)
    again = fresh()  # as a resumed build makes it: a new objective that loads the data again
    data = again.reader.load_data(Path(data_path), seq_len)
    model = ModkitModel(backbone)
    model.add_objective("objective", again)
    torch.manual_seed(seed)  # with gradients, as before: SDPA may pick another dropout kernel without
    assert again.head.loss(backbone, first)[0].item() == loss, f"{name}: the same seed gives another loss"

    model.eval()
    inputs = again.reader.export_inputs(data)
    assert {"input_ids", "attention_mask"} <= inputs.keys(), f"{name}.export_inputs must give input_ids and attention_mask"
    with torch.no_grad():
        logits = model(inputs["input_ids"], inputs["attention_mask"]).logits
    assert isinstance(logits, torch.Tensor) and logits.shape[0] == inputs["input_ids"].shape[0], \
        f"{name}.logits must give one row per input row"
    _check_export(name, objective_class.task, again.export, seq_len, legacy, registry)
    if export:
        from modkit.builder.export.exporter import Exporter

        graphs = registry.get("task", objective_class.task).load().graphs
        with tempfile.TemporaryDirectory() as tmp:
            exporter = Exporter(Path(tmp))
            figures = again.export.graphs(model, exporter, inputs)
            assert "max_abs_diff" in figures, f"{name}.export must return parity figures with max_abs_diff"
            missing = [g for g in graphs if not (Path(tmp) / g).is_file()]
            assert not missing, f"{name}.export wrote {exporter.written}; task {objective_class.task!r} also opens {missing}"


def _check_reader(name: str, reader, data, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """The first batch, once it is shown to be reproducible and ``batch_size`` rows."""
    first = _batch(reader, data, batch_size, seed)
    torch.manual_seed(seed + 1)  # a batch drawn from torch's global RNG would now differ
    assert _equal(first, _batch(reader, data, batch_size, seed)), \
        f"{name}.batch gives different batches for the same generator (does it use torch's global RNG?)"
    assert all(isinstance(v, torch.Tensor) and v.shape[0] == batch_size for v in first.values()), \
        f"{name}.batch must give tensors with {batch_size} rows, got {({k: tuple(v.shape) for k, v in first.items()})}"
    return first


def _check_head(name: str, objective, backbone, batch: dict, seed: int, legacy: bool) -> float:
    """The loss on ``batch`` in train mode, once its figures and its gradient are checked."""
    assert isinstance(objective.head, torch.nn.Module), f"{name}'s head must be a torch.nn.Module"
    model = ModkitModel(backbone)
    model.add_objective("objective", objective)
    model.train()
    torch.manual_seed(seed)
    loss, figures = objective.head.loss(backbone, batch)
    assert loss.ndim == 0 and math.isfinite(loss.item()), f"{name}.loss must be a finite scalar, got {loss}"
    figure_ok = (lambda v: isinstance(v, (torch.Tensor, float))) if legacy else \
        (lambda v: isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad)
    assert all(isinstance(k, str) and figure_ok(v) for k, v in figures.items()), \
        f"{name}.loss figures must be {{str: detached scalar tensor}}, got {figures}"
    model.zero_grad()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters()), \
        f"{name}.loss does not reach the backbone's weights"
    return loss.item()


def _check_export(name: str, task: str, export, seq_len: int, legacy: bool, registry) -> None:
    """The task record: typed, JSON, the class's task, served, and its max_length from the
    seq_len it is given (an old-contract objective's comes from its own state)."""
    record = export.task_record(seq_len)
    assert isinstance(record, TaskRecord), f"{name}'s task_record must be a modkit.TaskRecord, got {type(record).__name__}"
    json.dumps(record.as_dict())
    for length in (seq_len, 2 * seq_len) if not legacy else (seq_len,):
        told = export.task_record(length).max_length
        assert told in (None, length), \
            f"{name}'s task_record({length}) says max_length {told}: it must be the seq_len it is given"
    assert record.task == task, f"{name}'s task record names task {record.task!r}, the class says {task!r}"
    assert task in registry.names("task"), \
        f"no task component {task!r} is registered: `modkit run` could not serve {name}'s artifacts"
