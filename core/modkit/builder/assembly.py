"""The model a build grows, and the same model rebuilt from an artifact: its tokenizer and
backbone from a spec, each stage's objectives and PEFT methods attached, merged when their
stage ends; ``assemble_model`` and ``load_torch_model`` replay that from a manifest."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from modkit.builder.hf.convert import load_hf
from modkit.builder.merge import merge_checked
from modkit.builder.peft_plan import PeftPlan, PlannedMethod
from modkit.builder.training.engine import step_seed
from modkit.errors import ArtifactError, UserError
from modkit.generation_config import generation_record
from modkit.interfaces import BackboneCapabilities
from modkit.manifest import Manifest
from modkit.nn.generation import set_generation_defaults
from modkit.nn.model import ModkitModel
from modkit.registry import Component, Registry, get_registry
from modkit.spec import Spec
from modkit.tokenization import artifact_tokenizer, load_tokenizer


def component_of(kind: str, obj, registry: Registry) -> Component:
    """The registered component that made ``obj`` (a loaded tokenizer or checkpoint backbone):
    the one whose implementation is obj's class, or whose options model obj's config is."""
    path = f"{type(obj).__module__}:{type(obj).__qualname__}"
    comps = [registry.get(kind, name) for name in registry.names(kind)]
    for comp in comps:
        if comp.impl == path or comp.options is type(getattr(obj, "config", None)):
            return comp
    raise UserError(f"no registered {kind} builds a {type(obj).__name__}")


def seed_stage(seed: int, index: int) -> None:
    """Seed the init of a stage's new modules, so a resumed build draws the same ones."""
    torch.manual_seed(step_seed(seed, index, 2**31))


def attach_stage(model: ModkitModel, objectives: list[tuple[Component, Any]], peft: list[PlannedMethod],
                  tokenizer, seed: int, index: int) -> tuple[list, list, list[torch.nn.Module]]:
    """Add one stage's objectives (the first is the task) and planned PEFT methods; return
    (objectives, (component, method, modules) per method, new modules)."""
    seed_stage(seed, index)
    objs, new_modules = [], []
    for comp, options in objectives:
        earlier = comp.name in model.objectives
        objs.append(model.add_objective(comp.name, comp.load()(options, model.backbone, tokenizer)))
        if earlier:  # an earlier stage's objective: its head carries on, under this stage's options
            objs[-1].use_options(options)
        else:
            new_modules.append(objs[-1].head)
    model.task = objectives[0][0].name
    methods = []
    for planned in peft:
        method, modules = planned.attach(model.backbone, tokenizer)
        methods.append((planned.component, method, modules))
        new_modules += modules
    return objs, methods, new_modules


def set_trainable(model: ModkitModel, objectives, methods) -> tuple[int, int]:
    """With PEFT, train only its modules and the heads; otherwise everything."""
    if methods:
        model.requires_grad_(False)
        for objective in objectives:
            objective.head.requires_grad_(True)
        for _, _, modules in methods:
            for m in modules:
                m.requires_grad_(True)
    else:
        model.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def merge_pending(methods, merged: set[int], model: ModkitModel, inputs=None, tolerance: float = 0.0) -> dict | None:
    """Merge the methods not merged yet (LoRA folds away; adapters stay; prefixes freeze). With
    ``inputs``, checked: the outputs must not move by more than ``tolerance``; return the figures.
    (Without, on a resume: untrained methods of finished stages, before the checkpoint loads.)"""
    todo = [(comp.name, method) for comp, method, _ in methods if id(method) not in merged]
    merged.update(id(method) for _, method in todo)
    if not todo:
        return None
    if inputs is None:
        for _, method in todo:
            method.merge(model.backbone)
        return None
    return merge_checked(model, todo, inputs, tolerance=tolerance)


def assemble_model(manifest: Manifest, tokenizer, registry: Registry) -> ModkitModel:
    """The untrained structure an artifact's weights fit: backbone, heads, kept PEFT modules."""
    comps = manifest.components
    bcomp = registry.get("backbone", comps.backbone.name)
    backbone = bcomp.load()(bcomp.options.model_validate(comps.backbone.options))
    model = ModkitModel(backbone)
    plan = PeftPlan.from_manifest(manifest, registry)
    for i, stage in enumerate(comps.stages):
        objectives = []
        for record in stage.all_objectives():
            ocomp = registry.get("objective", record.name)
            objectives.append((ocomp, ocomp.options.model_validate(record.options)))
        _, methods, _ = attach_stage(model, objectives, plan.stages[i], tokenizer, manifest.seed, i)
        for planned, (_, method, _) in zip(plan.stages[i], methods):
            if planned.merges:  # a kept method that merged has its merged shape (prefix constants)
                method.merge(model.backbone)
    return model.eval()


def load_torch_model(folder: str | Path, *, registry=None):
    """Rebuild the trained torch model (a :class:`modkit.nn.model.ModkitModel`) of an artifact."""
    folder = Path(folder)
    manifest = Manifest.read(folder)
    registry = registry or get_registry()
    tokenizer = artifact_tokenizer(folder, manifest, registry)
    model = assemble_model(manifest, tokenizer, registry)
    state = load_file(str(folder / "model.safetensors"))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{folder / 'model.safetensors'}: weights do not fit the manifest's model ({e})") from None
    if manifest.generation is not None:
        set_generation_defaults(model, generation_record(manifest.generation, f"{folder / 'manifest.json'}"))
    return model.eval().requires_grad_(False)


def stage_tokenizer(spec: Spec, work: Path, echo, registry: Registry):
    """(tokenizer, whether it was trained now): loaded with ``from``, from an interrupted build's
    work folder, or trained (and saved into the work folder only once the checks pass)."""
    saved = work / "tokenizer.json"
    if spec.model.tokenizer.from_:
        return load_tokenizer(spec.from_path(spec.model.tokenizer.from_), registry=registry), False
    if saved.exists():
        return load_tokenizer(saved, registry=registry), False
    res = spec.tokenizer
    files = spec.tokenizer_text()
    echo(f"training tokenizer {res.component.name} on {len(files)} file(s)")
    return res.component.load().train(files, res.options), True


def stage_backbone(spec: Spec, tokenizer, registry: Registry):
    if spec.model.backbone.from_:
        loaded = load_hf(spec.from_path(spec.model.backbone.from_), registry=registry)
        backbone = getattr(loaded, "backbone", loaded)
        return backbone, component_of("backbone", backbone, registry)
    res = spec.backbone
    options = options_from_tokenizer(res.options, tokenizer, res.component.load())
    if getattr(options, "vocab_size", tokenizer.vocab_size) < tokenizer.vocab_size:
        raise UserError(f"{spec.shown}: backbone.vocab_size {options.vocab_size} < the tokenizer's "
                        f"{tokenizer.vocab_size}")
    return res.component.load()(options), res.component


_ROLE_FIELDS = {"pad_token_id": "pad", "eos_token_id": "eos", "bos_token_id": "bos"}


def options_from_tokenizer(options, tokenizer, backbone_class=None):
    """Fill what the spec left unset from the tokenizer: vocab_size (when 0; plus the ids the
    family reserves past the tokenizer's vocabulary, as T5's sentinels, where the tokenizer lacks
    them), the special token ids, and ``decoder_start_token_id`` from the role the backbone
    declares its decoder starts from (BART the eos, T5 the pad)."""
    fields, given = type(options).model_fields, options.model_fields_set
    caps = capabilities(backbone_class, options)
    update = {}
    if "vocab_size" in fields and not options.vocab_size:
        update["vocab_size"] = tokenizer.vocab_size
        if caps.extra_ids and tokenizer.token_to_id("<extra_id_0>") is None:
            update["vocab_size"] += caps.extra_ids
    for name, role in _ROLE_FIELDS.items():
        if name in fields and name not in given and tokenizer.special_id(role) is not None:
            update[name] = tokenizer.special_id(role)
    start = caps.decoder_start and tokenizer.special_id(caps.decoder_start)
    if "decoder_start_token_id" in fields and "decoder_start_token_id" not in given and start is not None:
        update["decoder_start_token_id"] = start
    return options.model_copy(update=update)


def capabilities(backbone_class, options) -> BackboneCapabilities:
    """What ``backbone_class`` built with ``options`` declares (the default record for a class
    that is no :class:`modkit.Backbone`)."""
    declare = getattr(backbone_class, "capabilities", None)
    return declare(options) if declare is not None else BackboneCapabilities()
