"""Objective contract: batch -> loss -> backward, logits, export inputs and graphs, a served task."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

from modkit.nn.model import ModkitModel


def _batch(objective, data, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    return objective.batch(data, batch_size, torch.Generator().manual_seed(seed))


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_objective(objective_class, options, backbone, tokenizer, data_path, *, seq_len: int = 16,
                    batch_size: int = 2, seed: int = 0, registry=None, export: bool = True) -> None:
    """``objective_class(options, backbone, tokenizer)`` against its contract:

    - ``check_backbone`` accepts ``backbone`` (the caller picks a pair that should work);
    - ``load_data(data_path, seq_len)`` then ``batch``: tensors with ``batch_size`` rows, the
      same for the same generator whatever torch's global seed (builds are reproducible);
    - ``loss``: a finite scalar and float figures; ``backward`` reaches the backbone; the same
      seed gives the same head and the same loss (a new objective, as a resumed build makes,
      after its own ``load_data``);
    - ``export_inputs``: ``input_ids``/``attention_mask`` the model's ``logits`` accept, one
      row of logits per input row;
    - ``describe()``: JSON, ``task`` = the class's ``task``, a task component registered for it;
    - (``export``) ``export`` returns figures with ``max_abs_diff`` and writes every graph the
      serving task opens.
    """
    from modkit.registry import get_registry

    registry = registry or get_registry()
    name = objective_class.__name__
    objective_class.check_backbone(backbone)

    def fresh():
        torch.manual_seed(seed)
        return objective_class(options, backbone, tokenizer)

    objective = fresh()
    data = objective.load_data(Path(data_path), seq_len)
    first = _batch(objective, data, batch_size, seed)
    torch.manual_seed(seed + 1)  # a batch drawn from torch's global RNG would now differ
    assert _equal(first, _batch(objective, data, batch_size, seed)), \
        f"{name}.batch gives different batches for the same generator (does it use torch's global RNG?)"
    assert all(isinstance(v, torch.Tensor) and v.shape[0] == batch_size for v in first.values()), \
        f"{name}.batch must give tensors with {batch_size} rows, got {({k: tuple(v.shape) for k, v in first.items()})}"

    model = ModkitModel(backbone)
    model.add_objective("objective", objective)
    model.train()
    torch.manual_seed(seed)
    loss, figures = objective.loss(backbone, first)
    assert loss.ndim == 0 and math.isfinite(loss.item()), f"{name}.loss must be a finite scalar, got {loss}"
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in figures.items()), \
        f"{name}.loss figures must be {{str: float}}, got {figures}"
    model.zero_grad()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters()), \
        f"{name}.loss does not reach the backbone's weights"
    again = fresh()  # as a resumed build makes it: a new objective that loads the data again
    data = again.load_data(Path(data_path), seq_len)
    model.objectives["objective"] = again
    torch.manual_seed(seed)  # with gradients, as before: SDPA may pick another dropout kernel without
    assert again.loss(backbone, first)[0].item() == loss.item(), f"{name}: the same seed gives another loss"

    model.eval()
    inputs = again.export_inputs(data)
    assert {"input_ids", "attention_mask"} <= inputs.keys(), f"{name}.export_inputs must give input_ids and attention_mask"
    with torch.no_grad():
        logits = model(inputs["input_ids"], inputs["attention_mask"]).logits
    assert isinstance(logits, torch.Tensor) and logits.shape[0] == inputs["input_ids"].shape[0], \
        f"{name}.logits must give one row per input row"

    described = again.describe()
    json.dumps(described)
    assert described.get("task") == objective_class.task, \
        f"{name}.describe()['task'] is {described.get('task')!r}, the class says {objective_class.task!r}"
    assert objective_class.task in registry.names("task"), \
        f"no task component {objective_class.task!r} is registered: `modkit run` could not serve {name}'s artifacts"
    if export:
        from modkit.builder.export.exporter import Exporter

        graphs = registry.get("task", objective_class.task).load().graphs
        with tempfile.TemporaryDirectory() as tmp:
            exporter = Exporter(Path(tmp))
            figures = again.export(model, exporter, inputs)
            assert "max_abs_diff" in figures, f"{name}.export must return parity figures with max_abs_diff"
            missing = [g for g in graphs if not (Path(tmp) / g).is_file()]
            assert not missing, f"{name}.export wrote {exporter.written}; task {objective_class.task!r} also opens {missing}"
