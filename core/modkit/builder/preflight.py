"""What a build checks before any work: everything that needs only the spec, its files and the
backbone's shape.

The backbone is built on the meta device (shapes only: no memory, no initialisation), each
stage's objective is attached to it as the build will attach it, and each stage's data is read
by it. So an empty or malformed data file of the last stage is reported at once, not after the
earlier stages have trained. The PEFT plan (:func:`check_peft_plan`), the objective/backbone
pairs (:func:`check_stages`) and a data-parallel layout (:func:`check_world`) are checked just
before; the first two, on the spec's shape alone, before the tokenizer trains
(:func:`check_spec_shape`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable

import torch

from modkit.builder.peft_plan import PeftPlan
from modkit.errors import SpecError, UserError
from modkit.interfaces import capabilities_of
from modkit.nn.blocks import iter_roles, role_matches
from modkit.nn.model import ModkitModel
from modkit.nn.prompt import reserved_positions
from modkit.registry import Component, Registry
from modkit.sources import DataFile, cache_folder
from modkit.spec import Spec


def check_blocks(spec: Spec, backbone: torch.nn.Module) -> None:
    """Activation checkpointing wraps the blocks the backbone declares: it needs some."""
    from modkit.builder.training.sharding import block_class, blocks_of

    if not blocks_of(backbone, block_class(backbone)):
        bad = [(f"stages[{i}].activation_checkpointing", f"the backbone {type(backbone).__name__} declares no "
                                                        "block class (capabilities().block) to checkpoint")
               for i, s in enumerate(spec.model.stages) if s.activation_checkpointing]
        if bad:
            raise SpecError(str(spec.source), bad)


def preflight(spec, tokenizer, backbone: Component, options: Any) -> None:
    """Raise :class:`UserError` naming the spec key of the first problem found."""
    with _at(spec, "backbone"):
        model = _on_meta(lambda: ModkitModel(backbone.load()(options)))
    if model is None:
        return  # a backbone that cannot be built on the meta device is checked when the build makes it
    for i, stage in enumerate(spec.model.stages):
        for res in spec.objectives[i]:  # a stage's objectives all read its data
            with _at(spec, f"stages[{i}].objective"):
                objective = _on_meta(lambda: model.add_objective(
                    res.component.name, res.component.load()(res.options, model.backbone, tokenizer)))
            if objective is not None:
                data = spec.data_file(i, objective)
                with _at(spec, f"stages[{i}].data", data):  # off the meta device: objectives may look at the values
                    objective.reader.load_data(data.path, stage.seq_len)


def _on_meta(make: Callable[[], Any]) -> Any:
    """``make()`` on the meta device; None when a plugin's code cannot run there (it reads
    values: ``.item()``, a copy to the CPU): that part is then checked when the build reaches
    it. Any other exception is a fault of the plugin and surfaces now, before any training."""
    try:
        with torch.device("meta"):
            return make()
    except (RuntimeError, NotImplementedError, TypeError) as e:
        if _needs_values(e):
            return None
        raise


def _needs_values(error: Exception) -> bool:
    """Whether torch raised ``error`` because a meta tensor has no values to read."""
    return "meta" in str(error).lower()


@contextmanager
def _at(spec, key: str, data: DataFile | None = None):
    """Name the spec file and key path in a UserError raised inside (and, when the objective
    read a source's rows converted, which files they came from)."""
    try:
        yield
    except UserError as e:
        converted = data is not None and data.path.parent == cache_folder()
        raise UserError(f"{spec.shown}: {key}: {e}" + (
            f" (the rows of {', '.join(data.record['files'])} converted for the objective)" if converted else "")) from None


def method_from(spec: Spec, stage: int, index: int) -> str | None:
    """A stage's PEFT method's ``from`` as the spec gives it, if any."""
    return spec.model.stages[stage].peft[index].option_values().get("from")


def check_stages(spec: Spec, backbone, registry: Registry) -> None:
    """Before any training: every stage's objective accepts the backbone, and the last one's
    task is served by an installed task component (else the artifact could not be run)."""
    for stage in spec.objectives:
        for res in stage:
            where = f"{spec.shown}: {res.section} ({res.component.name!r})"
            cls = res.component.load()
            try:
                cls.check_backbone(backbone)
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
    last = spec.objectives[-1][0].component
    task = last.load().task
    if task not in registry.names("task"):
        raise UserError(f"{where}: its task {task!r} is served by no installed plugin (plugin {last.plugin!r} "
                        f"registers no task {task!r}); `modkit list --kind task` shows the tasks served here")


def check_peft_plan(spec: Spec, backbone: torch.nn.Module, bcomp: Component, tokenizer=None) -> None:
    """Replay the build's PEFT plan (:class:`modkit.builder.peft_plan.PeftPlan`) on a weightless
    copy of the backbone (on the meta device), so a clash (one method twice on a layer, targets
    that match nothing) or a stage whose sequences and virtual tokens overrun the positions is a
    spec error before any training, not after the first stage."""
    with torch.device("meta"):
        shadow = bcomp.load()(backbone.config)
    problems: list[tuple[str, str]] = []
    for i, stage in enumerate(PeftPlan.from_spec(spec).stages):
        applied = []
        for planned in stage:
            if planned.source is not None:
                continue  # a folder's layers are found from the real weights, when it is attached
            unmatched = _unmatched_patterns(planned.component.load()(planned.options), shadow, planned.key)
            if unmatched:
                problems += unmatched
                continue
            try:
                applied.append((planned, planned.attach(shadow, tokenizer)[0]))
            except UserError as e:
                problems.append((planned.key, str(e)))
        problems += _position_budget(spec, i, shadow)
        for planned, method in applied:  # as the build does at a stage boundary and before the export
            if planned.merges:
                try:
                    method.merge(shadow)
                except UserError as e:  # a method that cannot merge over what it found (its plugin says why)
                    problems.append((planned.key, str(e)))
    if problems:
        raise SpecError(spec.shown, problems)


def _unmatched_patterns(method, backbone: torch.nn.Module, where: str) -> list[tuple[str, str]]:
    """Every role pattern of ``method`` that matches no role of ``backbone``: one typo in a
    list would otherwise pass, since the other entries match."""
    roles = sorted({role for _, _, role in iter_roles(backbone)})
    return [(f"{where}.{key}[{n}]", f"{pattern!r} matches no role of the backbone; roles here: {', '.join(roles)}")
            for key, patterns in method.target_patterns().items()
            for n, pattern in enumerate(patterns) if not any(role_matches(role, [pattern]) for role in roles)]


def _position_budget(spec: Spec, stage: int, backbone: torch.nn.Module) -> list[tuple[str, str]]:
    """A stage's ``seq_len`` plus the positions its PEFT methods reserve (a prompt's virtual
    tokens) must fit the backbone's declared ``max_positions``."""
    limit, reserved = capabilities_of(backbone).max_positions, reserved_positions(backbone)
    seq_len = spec.model.stages[stage].seq_len
    if not reserved or limit is None or seq_len + reserved <= limit:
        return []
    return [(f"stages[{stage}].seq_len", f"{seq_len} tokens + {reserved} positions the PEFT methods reserve (virtual "
                                         f"tokens) > the backbone's {limit} positions; set seq_len <= "
                                         f"{limit - reserved} or reserve fewer")]


def check_spec_shape(spec: Spec, registry: Registry) -> None:
    """What needs only the spec's shape, before any work (the tokenizer's training included):
    every stage's objective against a weightless backbone of the spec's options, the task, and
    the PEFT plan (:func:`check_stages`, :func:`check_peft_plan`; both run again once the
    backbone and tokenizer are made). The vocabulary is the tokenizer's ``vocab_size`` option
    (the trained tokenizer's own size matters to no check here). A backbone from a checkpoint,
    or with no vocabulary size to be had from the spec, is checked once it is loaded."""
    if spec.backbone is None:
        return
    options = spec.backbone.options
    if "vocab_size" in type(options).model_fields and not options.vocab_size:
        vocab = getattr(spec.tokenizer.options, "vocab_size", 0) if spec.tokenizer else 0
        if not vocab:
            return
        options = options.model_copy(update={"vocab_size": vocab})
    bcomp = spec.backbone.component
    with _at(spec, "backbone"):
        backbone = _on_meta(lambda: bcomp.load()(options))
    if backbone is None:
        return
    check_stages(spec, backbone, registry)
    check_peft_plan(spec, backbone, bcomp)


def check_world(spec: Spec, world: int) -> None:
    """What a data-parallel build needs of the spec: every process takes an equal slice of each
    micro-batch, and a GPU of its own."""
    bad = [(f"stages[{i}].batch_size", f"{s.batch_size} does not divide into {world} processes")
           for i, s in enumerate(spec.model.stages) if s.batch_size % world]
    if spec.model.cpu_offload and spec.model.strategy != "fsdp":
        bad.append(("cpu_offload", 'offloads FSDP\'s shards: it needs strategy = "fsdp"'))
    if world > 1 and spec.model.device.startswith("cuda:"):
        bad.append(("device", f"{spec.model.device} would put all {world} processes on one GPU; use \"cuda\" "
                              "(each process takes cuda:LOCAL_RANK) and CUDA_VISIBLE_DEVICES to choose GPUs"))
    if bad:
        raise SpecError(spec.shown, bad)
