"""Objectives in parts (modkit.objectives): a part that leaves out an abstract method is refused
when the objective class is defined; an objective of the one-class contract is adapted with a
DeprecationWarning; the task record is a typed model that old manifests' plain dicts fill."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import modkit
from modkit.manifest import Manifest, TaskRecord
from modkit.nn.model import ModkitModel
from modkit.objectives import Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader, as_parts

from test_manifest import minimal, write


class Reader(ObjectiveReader):
    def load_data(self, path, seq_len):
        return torch.arange(8).reshape(4, 2)

    def batch(self, data, batch_size, generator):
        return {"input_ids": data[:batch_size]}

    def export_inputs(self, data):
        return {"input_ids": data, "attention_mask": torch.ones_like(data)}


class Head(nn.Module, ObjectiveHead):
    def __init__(self, options, backbone, reader):
        super().__init__()
        self.head = nn.Linear(2, 1)

    def loss(self, backbone, batch):
        loss = self.head(batch["input_ids"].float()).mean()
        return loss, {"loss": loss.detach()}

    def logits(self, backbone, output, attention_mask):
        return output


class Export(ObjectiveExport):
    def task_record(self, seq_len):
        return TaskRecord(task=self.task, max_length=seq_len)


def test_a_part_that_leaves_out_an_abstract_method_is_refused_where_the_objective_is_defined():
    class NoLoss(nn.Module, ObjectiveHead):
        def logits(self, backbone, output, attention_mask):
            return output

    class NoRecord(ObjectiveExport):
        pass

    with pytest.raises(TypeError, match="Head NoLoss leaves out loss"):
        class A(Objective):
            task = "t"
            Reader, Head, Export = Reader, NoLoss, Export
    with pytest.raises(TypeError, match="Export NoRecord leaves out task_record"):
        class B(Objective):
            task = "t"
            Reader, Head, Export = Reader, Head, NoRecord
    with pytest.raises(TypeError, match="Head PlainHead is not a torch.nn.Module"):
        class PlainHead(ObjectiveHead):
            def loss(self, backbone, batch): ...

            def logits(self, backbone, output, attention_mask): ...

        class C(Objective):
            task = "t"
            Reader, Head, Export = Reader, PlainHead, Export
    with pytest.raises(TypeError, match="names no Export"):
        class D(Objective):
            task = "t"
            Reader, Head = Reader, Head


def test_the_objective_makes_its_parts_and_the_model_holds_the_head_under_the_objectives_name():
    class Whole(Objective):
        task = "t"
        Reader, Head, Export = Reader, Head, Export

    objective = Whole(None, None, None)
    assert objective.export.reader is objective.reader and objective.export.head is objective.head
    model = ModkitModel(nn.Identity())
    assert model.add_objective("whole", objective) is objective and model.objective() is objective
    assert list(model.state_dict()) == ["objectives.whole.head.weight", "objectives.whole.head.bias"]
    assert objective.export.task_record(16).as_dict() == {"task": "t", "max_length": 16}


def test_a_one_class_objective_is_adapted_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="Old is written against the old one-class contract"):
        class Old(nn.Module, Objective):
            task = "t"

            def __init__(self, options, backbone, tokenizer):
                nn.Module.__init__(self)
                Objective.__init__(self, options, backbone, tokenizer)
                self.head = nn.Linear(2, 1)
                self.max_length = None

            def load_data(self, path, seq_len):
                self.max_length = seq_len
                return torch.zeros(2, 2)

            def loss(self, backbone, batch):
                return self.head(batch).mean(), {}

            def describe(self):
                return {"task": self.task, "max_length": self.max_length}

    parts = as_parts(Old(None, None, None))
    assert parts.reader is parts.head is parts.old and parts.task == "t" and parts.reads == "records"
    data = parts.reader.load_eval_data("x", 12)  # the old base's default: load_data
    assert parts.reader.eval_batches(data, 2, 2) == () and parts.head.evaluate(None, data) == {}
    assert parts.reader.heldout_classes(data) is None and parts.export.hf_head(None) is None
    assert parts.export.task_record(99) == TaskRecord(task="t", max_length=12)  # its own, as before
    model = ModkitModel(nn.Identity())
    model.add_objective("old", parts.old)
    assert list(model.state_dict()) == ["objectives.old.head.weight", "objectives.old.head.bias"]


def test_the_built_in_objectives_are_of_the_new_contract():
    registry = modkit.get_registry()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name in registry.names("objective"):
            comp = registry.get("objective", name)
            if comp.plugin.startswith("regress"):
                continue  # examples/plugin-regress: the one-class contract, adapted
            assert not comp.load().legacy, name


def test_an_old_manifests_task_dict_reads_as_a_task_record_and_serves_as_a_dict(tmp_path):
    write(tmp_path, minimal(task={"task": "classify", "labels": ["a", "b"], "pad_token_id": 0}))
    record = Manifest.read(tmp_path, verify=False).task
    assert isinstance(record, TaskRecord) and record.task == "classify" and record.max_length is None
    assert record["labels"] == ["a", "b"] and record.get("pad_token_id") == 0 and record.get("top_k", 5) == 5
    assert "max_length" not in record and record.as_dict() == {"task": "classify", "labels": ["a", "b"],
                                                               "pad_token_id": 0}
    assert json.loads(json.dumps(Manifest.read(tmp_path, verify=False).to_json()))["task"] == record.as_dict()
