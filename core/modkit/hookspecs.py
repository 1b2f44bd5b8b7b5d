"""The hooks a modkit plugin implements.

Each hook receives a ``register`` callback; a plugin calls it once per component it offers.
Registration is cheap by contract: the callback takes metadata and an *import path* to the
implementation, which is imported only when the component is first used. That keeps
``modkit list`` free of torch.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("modkit")


@hookspec
def modkit_register_tokenizers(register):
    """Add tokenizer components.

    :param register: ``register(name, impl, options, doc="", version=None)`` where ``impl`` is
        ``"module:Class"`` naming a :class:`modkit.interfaces.Tokenizer` subclass and
        ``options`` is its pydantic options model.
    """


@hookspec
def modkit_register_backbones(register):
    """Add backbone components.

    :param register: as for tokenizers; ``impl`` names a callable ``impl(options)`` that
        returns a :class:`modkit.interfaces.Backbone`.
    """


@hookspec
def modkit_register_objectives(register):
    """Add objective components.

    :param register: as for tokenizers; ``impl`` names a :class:`modkit.interfaces.Objective`
        subclass, constructed as ``impl(options, backbone, tokenizer)``.
    """


@hookspec
def modkit_register_peft_methods(register):
    """Add parameter-efficient fine-tuning methods.

    :param register: as for tokenizers; ``impl`` names a :class:`modkit.interfaces.PeftMethod`
        subclass, constructed as ``impl(options)``.
    """


@hookspec
def modkit_register_data_sources(register):
    """Add data sources: where a stage's ``data`` is read from (CSV, Parquet, ...).

    :param register: as for tokenizers; ``impl`` names a :class:`modkit.sources.DataSource`
        subclass, constructed as ``impl(options, base)`` (``base``: the spec's folder), and
        ``options`` subclasses :class:`modkit.sources.SourceOptions`.
    """


@hookspec
def modkit_register_trackers(register):
    """Add trackers: where a build's figures go besides metrics.jsonl (TensorBoard, MLflow...).

    :param register: as for tokenizers; ``impl`` names a :class:`modkit.tracking.Tracker`
        subclass, constructed as ``impl(options, base, name)``; import the tracking library
        in its module, not the registering one: it is imported only when a build chooses it.
    """


@hookspec
def modkit_register_checkpoint_formats(register):
    """Teach :func:`modkit.load_model` a Hugging Face ``model_type``.

    :param register: ``register(model_type, impl)`` where ``impl`` is ``"module:Class"``
        naming a format class with ``from_hf(config, weights) -> model``,
        ``to_hf(model) -> (config, weights)`` and ``handles(model) -> bool``
        (see :mod:`modkit.builder.hf.convert`).
    """


@hookspec
def modkit_register_tasks(register):
    """Teach ``modkit run`` and ``modkit serve`` to serve a task (torch-free).

    An objective's task record (:meth:`~modkit.objectives.ObjectiveExport.task_record`) names its task
    (``{"task": "classify", ...}``); the artifact is served by the task component of that name.

    :param register: ``register(name, impl, options=RunOptions, doc="")`` where ``impl`` is
        ``"module:Class"`` naming a :class:`modkit.interfaces.Task` subclass in a module that does
        not import torch, and ``options`` the pydantic model of the options a caller may pass
        per run (``max_new_tokens``...).
    """


@hookspec
def modkit_register_commands(register):
    """Add a subcommand to the ``modkit`` command line.

    :param register: ``register(name, impl, doc="")`` where ``impl`` is ``"module:command"``
        naming a :class:`click.Command`; it is imported only when the command runs (or its
        help is shown), so a command may import torch at module level.
    """


@hookspec
def modkit_register_optimizers(register):
    """Add optimizers, chosen per stage with ``optimizer = { use = NAME, <options> }``.

    :param register: as for tokenizers; ``options`` subclasses :class:`modkit.optim.OptimizerOptions`
        and ``impl`` names a callable ``impl(param_groups, options)`` that returns a
        :class:`torch.optim.Optimizer`. Each group is a dict with ``params``, ``lr`` and
        ``weight_decay``; the build sets every group's ``lr`` before each step, and the optimizer's
        state must be tensors (it goes into safetensors checkpoints).
    """


@hookspec
def modkit_register_schedules(register):
    """Add learning-rate schedules, chosen per stage with ``schedule = { use = NAME, <options> }``.

    :param register: as for tokenizers; ``options`` subclasses :class:`modkit.optim.ScheduleOptions`
        and ``impl`` names a callable ``impl(options, steps, lr)`` (the stage's steps and peak lr,
        ``options.warmup_steps`` filled in) that returns ``factor(n)``: the multiplier of the peak lr
        at optimizer step ``n``, counted from 0. It must be a pure function of ``n``, so a resumed
        stage needs no schedule state.
    """
