"""An objective in three parts: what reads its data, its head, and what it exports.

- :class:`ObjectiveReader` turns files into tokenized examples and those into CPU batches;
  it holds no weights.
- :class:`ObjectiveHead` is a ``torch.nn.Module`` (concrete heads subclass it too): the task
  head's parameters, the loss, the task's logits and the held-back figures.
- :class:`ObjectiveExport` writes the ONNX graph(s) a task is served from, describes the head
  for ``modkit export-hf`` and gives the manifest's :class:`~modkit.manifest.TaskRecord`.

The registered :class:`Objective` names its part classes; the build makes one of each and
calls the parts. A part class that leaves an abstract method out is refused when the
objective class is defined, not when the build first calls the method.

This module imports no torch (the registry and the runtime import it).
"""
from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from modkit.manifest import TaskRecord

if TYPE_CHECKING:
    import torch
    from modkit.builder.export.exporter import Exporter
    from modkit.interfaces import Backbone, Tokenizer
    from modkit.options import Options


class ObjectiveReader(ABC):
    """Reads a stage's data file once and draws batches from it (CPU tensors)."""

    #: the form :meth:`load_data` reads: ``"text"`` (a UTF-8 text file) or ``"records"`` (a
    #: JSON-lines file, one object per example, each role under its own name: ``text``,
    #: ``label``...). A stage's data source, whatever it is (CSV, Parquet, gzipped text...),
    #: is given to the objective in this form (:mod:`modkit.sources`).
    reads: ClassVar[str] = "records"

    def __init__(self, options: Options, backbone: Backbone, tokenizer: Tokenizer):
        self.options = options
        self.tokenizer = tokenizer

    @abstractmethod
    def load_data(self, path: Path, seq_len: int) -> Any:
        """Read and tokenize a data file (in the form :attr:`reads` names) once per stage; the
        result goes to :meth:`batch`."""

    @abstractmethod
    def batch(self, data: Any, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One training batch, drawn with ``generator`` (so builds are reproducible)."""

    @abstractmethod
    def export_inputs(self, data: Any) -> dict[str, torch.Tensor]:
        """A few held-back inputs (input_ids, attention_mask) for the ONNX parity check."""

    def load_eval_data(self, path: Path, seq_len: int) -> Any:
        """A stage's ``eval_data`` file, all of it held back (what :meth:`eval_batches` and
        the head's ``evaluate`` read). By default :meth:`load_data`'s result."""
        return self.load_data(path, seq_len)

    def eval_batches(self, data: Any, batch_size: int, limit: int) -> Iterable[dict[str, torch.Tensor]]:
        """Batches of at most ``limit`` held-back examples, in a fixed order (CPU tensors, like
        :meth:`batch`). The build reports the mean of the head's loss over them as
        ``eval_loss`` (and, where :attr:`Objective.perplexity`, its exp as ``eval_perplexity``).
        By default none: only the head's ``evaluate`` runs."""
        return ()

    def heldout_classes(self, data: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
        """Every held-back example as inputs of the default graph (``model.onnx``, as
        :meth:`export_inputs`) and its gold class id, or None. A classifier gives them, and the
        build records the accuracy of each int8/fp16 graph against fp32's on them."""
        return None


class ObjectiveHead(ABC):
    """The trainable part: concrete heads subclass ``torch.nn.Module`` too, and their
    parameters are the task head's (saved under ``objectives.<objective name>.``). Made as
    ``Head(options, backbone, reader)``; ``reader`` is the objective's :class:`ObjectiveReader`
    (``evaluate`` draws its held-back batches through it)."""

    @abstractmethod
    def loss(self, backbone: Backbone, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss and named figures to log, each a detached tensor on the batch's
        device: no ``.item()`` here (a device sync, and a torch.compile graph break, per
        micro-batch); whoever reads them does it once."""

    @abstractmethod
    def logits(self, backbone: Backbone, output: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The task's output from the backbone's: vocabulary logits, class logits... This is
        what the default exported graph computes and what its parity check compares."""

    def evaluate(self, backbone: Backbone, data: Any) -> dict[str, float]:
        """Figures on held-back data (may be empty), named ``heldout_*``: what the loss does not
        say (accuracy, exact match, a baseline); the held-back loss itself is ``eval_loss``.
        ``backbone`` may be on a GPU: build tensors on ``modkit.data.device_of(backbone)``."""
        return {}


class ObjectiveExport(ABC):
    """What an objective's artifact carries beyond the weights. Made as
    ``Export(options, reader, head)``."""

    #: the objective's :attr:`Objective.task` (the objective sets it), what a task record names
    task: str

    def __init__(self, options: Options, reader: ObjectiveReader, head: ObjectiveHead):
        self.options = options
        self.reader = reader
        self.head = head

    def graphs(self, model: torch.nn.Module, exporter: Exporter, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Write the ONNX graph(s) this objective's task is served from and return the parity
        figures the manifest records (at least ``max_abs_diff``).

        ``modkit build`` calls it once, after merging, with the whole model (a
        :class:`modkit.nn.model.ModkitModel`: ``.backbone``, and ``model(input_ids,
        attention_mask).logits`` from the head's ``logits``) and ``inputs`` from the reader's
        ``export_inputs``. ``exporter`` (a :class:`modkit.builder.export.exporter.Exporter`) knows the
        folder and the ``[export]`` options and writes the standard graphs with their parity
        checks. The default writes ``model.onnx``, ``(input_ids, attention_mask) -> logits``."""
        return exporter.logits_graph(model, inputs)

    def hf_head(self, backbone: Backbone) -> dict[str, Any] | None:
        """The task head in family-neutral terms, for ``modkit export-hf``; None if it has no
        counterpart in transformers. ``{"kind": "causal-lm"}``, ``{"kind": "masked-lm"}``, or
        ``{"kind": "sequence-classification" | "token-classification", "weight": W, "bias": b,
        "labels": [...], "pooling": "pooler" | "first" | "last"}``. The backbone's checkpoint
        format decides whether its transformers classes can carry it (``with_head``)."""
        return None

    @abstractmethod
    def task_record(self, seq_len: int) -> TaskRecord:
        """What the manifest records of the task for its runtime :class:`~modkit.interfaces.Task`:
        the task name plus what serving needs to prepare inputs (special ids, ``max_length``)
        and read outputs (``labels``). ``seq_len`` is the last stage's, the length the model
        was trained on."""


_PARTS = {"Reader": ObjectiveReader, "Head": ObjectiveHead, "Export": ObjectiveExport}


class Objective:
    """A training task, registered with ``modkit_register_objectives``: it names its parts'
    classes, and the build makes ``Objective(options, backbone, tokenizer)``, which makes
    ``.reader``, ``.head`` and ``.export`` (see the module's docstring)."""

    #: the name of the task component (registered with ``modkit_register_tasks``) that serves
    #: this objective's artifacts: generate, classify, seq2seq, ... A build refuses an
    #: objective whose task no installed plugin serves, before any training.
    task: ClassVar[str]
    #: whether the loss is a mean cross-entropy per predicted token over the vocabulary (clm,
    #: mlm, seq2seq), so that exp(eval_loss) is a perplexity the build reports as
    #: ``eval_perplexity``; a classifier's loss is not one
    perplexity: ClassVar[bool] = False
    Reader: ClassVar[type[ObjectiveReader]]
    Head: ClassVar[type[ObjectiveHead]]
    Export: ClassVar[type[ObjectiveExport]]
    #: the reader's :attr:`ObjectiveReader.reads`, readable before any part is made
    reads: ClassVar[str] = "records"
    #: written against the one-class contract before objectives came in parts (see :func:`as_parts`)
    legacy: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "Reader") and callable(getattr(cls, "loss", None)):
            _adopt_legacy(cls)
            return
        missing = [name for name in _PARTS if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"objective {cls.__name__} names no {' or '.join(missing)} class")
        for name, base in _PARTS.items():
            part = getattr(cls, name)
            if not (isinstance(part, type) and issubclass(part, base)):
                raise TypeError(f"objective {cls.__name__}: {name} = {part!r} is not a subclass of {base.__name__}")
            if inspect.isabstract(part):
                raise TypeError(f"objective {cls.__name__}: {name} {part.__name__} leaves out "
                                f"{', '.join(sorted(part.__abstractmethods__))}")
        if not callable(getattr(cls.Head, "register_buffer", None)):
            raise TypeError(f"objective {cls.__name__}: Head {cls.Head.__name__} is not a torch.nn.Module")
        cls.reads = cls.Reader.reads

    def __init__(self, options: Options, backbone: Backbone, tokenizer: Tokenizer):
        type(self).check_backbone(backbone)
        self.options = options
        if self.legacy:
            return  # the old contract: the subclass is every part itself
        self.reader = self.Reader(options, backbone, tokenizer)
        self.head = self.Head(options, backbone, self.reader)
        self.export = self.Export(options, self.reader, self.head)
        self.export.task = self.task

    @classmethod
    def check_backbone(cls, backbone: Backbone) -> None:
        """Raise :class:`modkit.errors.UserError` if this objective cannot train or export with
        ``backbone``. ``modkit build`` calls it for every stage before any training; read only
        attributes, the config and which methods exist, do not run the backbone (its weights
        may be on the meta device). The default accepts every backbone."""

    def use_options(self, options: Options) -> None:
        """A later stage reuses this objective (its head trains on) under its own options."""
        self.options = self.reader.options = self.head.options = self.export.options = options


# -- the old contract --------------------------------------------------------------------------

def _legacy_defaults() -> dict[str, Any]:
    """What the old ``Objective`` base gave its subclasses where they wrote nothing."""
    def load_eval_data(self, path, seq_len):
        return self.load_data(path, seq_len)

    def export(self, model, exporter, inputs):
        return exporter.logits_graph(model, inputs)

    def describe(self):
        return {"task": self.task}

    return {"load_eval_data": load_eval_data, "eval_batches": lambda self, data, batch_size, limit: (),
            "evaluate": lambda self, backbone, data: {}, "heldout_classes": lambda self, data: None,
            "hf_head": lambda self, backbone: None, "export": export, "describe": describe}


def _adopt_legacy(cls: type) -> None:
    warnings.warn(f"objective {cls.__module__}.{cls.__name__} is written against the old one-class contract "
                  "(load_data, loss, describe... on the objective); modkit adapts it for now. Split it into "
                  "Reader, Head and Export classes (docs/plugins.md, section 7, 'Objective')",
                  DeprecationWarning, stacklevel=3)
    cls.legacy = True
    for name, default in _legacy_defaults().items():
        if not hasattr(cls, name):
            setattr(cls, name, default)


class _LegacyExport(ObjectiveExport):
    def __init__(self, old: Any):
        super().__init__(old.options, old, old)
        self.old, self.task = old, old.task

    def graphs(self, model, exporter, inputs):
        return self.old.export(model, exporter, inputs)

    def hf_head(self, backbone):
        return self.old.hf_head(backbone)

    def task_record(self, seq_len: int) -> TaskRecord:
        return TaskRecord.model_validate(self.old.describe())  # its own max_length, left by load_data


class _LegacyParts:
    """An old-contract objective seen as parts: it is its own reader and head (its weights keep
    their names), and :class:`_LegacyExport` maps ``export``/``describe`` to the new names."""

    def __init__(self, old: Any):
        self.old = old
        self.task, self.perplexity, self.reads = old.task, old.perplexity, old.reads
        self.reader = self.head = old
        self.export = _LegacyExport(old)

    @property
    def options(self) -> Options:
        return self.old.options

    def use_options(self, options: Options) -> None:
        self.old.options = self.export.options = options


def as_parts(objective: Any) -> Objective:
    """``objective`` with ``.reader``, ``.head`` and ``.export``: itself, or an old-contract
    objective (a DeprecationWarning when its class was defined) wrapped."""
    return _LegacyParts(objective) if getattr(objective, "legacy", False) else objective
