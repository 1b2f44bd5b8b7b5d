"""What to count: the model's shape and its training stages, from a spec, an artifact or a
backbone preset. Models are built on torch's meta device (no memory, no init cost)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import modkit
from modkit.errors import UserError
from modkit_plugins.analysis.cost_model import DECODER, ENCODER, Shape, StageTokens

#: objectives whose loss needs a vocabulary-sized output on every position
LM_OBJECTIVES = {"clm", "mlm", "denoise", "span-corruption", "seq2seq"}


@dataclass
class Plan:
    name: str
    shape: Shape
    stages: list[tuple[str, StageTokens]]  # (label, tokens)
    measured: dict[str, Any] = field(default_factory=dict)  # an artifact's recorded resources


def _side(name: str) -> str:
    return DECODER if "decoder" in name else ENCODER


def shape_of(backbone: nn.Module) -> Shape:
    """Count matmul weights and attention widths by the core blocks' role names."""
    weights: dict[str, int] = {}
    self_attn: dict[str, list[int]] = {}
    cross: list[int] = []
    for name, module in backbone.named_modules():
        role = getattr(module, "modkit_role", None)
        if isinstance(module, nn.Linear) and not name.endswith("lm_head"):  # the head is d x vocab below
            weights[_side(name)] = weights.get(_side(name), 0) + module.weight.numel()
        if role == "attn.q":
            self_attn.setdefault(_side(name), []).append(module.out_features)
        elif role == "cross.q":
            cross.append(module.out_features)
    return Shape(d_model=backbone.d_model, vocab_size=backbone.vocab_size,
                 encoder_decoder=bool(getattr(backbone, "is_encoder_decoder", False)),
                 weights=weights, self_attention=self_attn, cross_attention=cross)


def peft_weights(backbone: nn.Module, methods: list[tuple[Any, Any]]) -> dict[str, int]:
    """Weights the PEFT methods add, by side, from applying them to a copy of the backbone."""
    model = copy.deepcopy(backbone)
    added: dict[str, int] = {}
    for component, options in methods:
        modules = component.load()(options).apply(model)
        names = {id(m): n for n, m in model.named_modules()}
        for m in modules:
            side = _side(names.get(id(m), ""))
            added[side] = added.get(side, 0) + sum(p.numel() for p in m.parameters())
    return added


def _lm_head(objective: str, options: dict) -> bool:
    return objective in LM_OBJECTIVES or bool(options.get("aux_lm_weight"))


def _stage(backbone, objective: str, obj_options: dict, methods, steps: int, batch: int, seq_len: int,
           encoder_decoder: bool) -> tuple[str, StageTokens]:
    target = (obj_options.get("max_target_len") or seq_len) if encoder_decoder else 0
    tokens = StageTokens(sequences=steps * batch, source_len=seq_len, target_len=target,
                         lm_head=_lm_head(objective, obj_options),
                         peft_weights=peft_weights(backbone, methods) if methods else None)
    label = objective + ("+" + "+".join(c.name for c, _ in methods) if methods else "")
    return label, tokens


def _meta_backbone(component, options) -> nn.Module:
    with torch.device("meta"):
        return component.load()(options)


def plan_from_spec(path: Path, registry) -> Plan:
    from modkit.spec import load_spec

    spec = load_spec(path, registry=registry)
    if spec.model.backbone.from_:
        loaded = modkit.load_model(spec.path(spec.model.backbone.from_))
        backbone = getattr(loaded, "backbone", loaded)
    else:
        options = spec.backbone.options
        if "vocab_size" in type(options).model_fields and not options.vocab_size:
            vocab = getattr(spec.tokenizer.options, "vocab_size", 0) if spec.tokenizer else 0
            if not vocab:
                raise UserError(f"{path}: backbone.vocab_size is 0 and the tokenizer names no vocab_size")
            options = options.model_copy(update={"vocab_size": vocab})
        backbone = _meta_backbone(spec.backbone.component, options)
    shape = shape_of(backbone)
    stages = [_stage(backbone, spec.objectives[i][0].component.name, spec.objectives[i][0].options.model_dump(),
                     [(r.component, r.options) for r in spec.peft[i]], s.steps, s.batch_size, s.seq_len,
                     shape.encoder_decoder)
              for i, s in enumerate(spec.model.stages)]
    return Plan(spec.model.name, shape, stages)


def plan_from_artifact(folder: Path, registry) -> Plan:
    manifest = modkit.Manifest.read(folder, verify=False)  # the plan needs only the recorded shapes and steps
    comps = manifest.components
    try:
        spec_stages = [(s["steps"], s["batch_size"], s["seq_len"]) for s in manifest.spec["stages"]]
    except (KeyError, TypeError) as e:
        raise UserError(f"{folder / 'manifest.json'}: spec.stages lacks {e}; not a readable modkit manifest") from None
    bcomp = registry.get("backbone", comps.backbone.name)
    backbone = _meta_backbone(bcomp, bcomp.options.model_validate(comps.backbone.options))
    shape = shape_of(backbone)
    stages = []
    for record, (steps, batch_size, seq_len) in zip(comps.stages, spec_stages):
        methods = [(registry.get("peft", p.name), registry.get("peft", p.name).options.model_validate(p.options))
                   for p in record.peft]
        stages.append(_stage(backbone, record.objective.name, record.objective.options, methods,
                             steps, batch_size, seq_len, shape.encoder_decoder))
    return Plan(manifest.name, shape, stages, manifest.resources or {})


def plan_from_preset(name: str, registry, tokens: float, seq_len: int, target_len: int | None) -> Plan:
    """A backbone component or preset trained from scratch on ``tokens`` source tokens."""
    component, values = registry.resolve("backbone", name)
    backbone = _meta_backbone(component, component.options.model_validate(values))
    shape = shape_of(backbone)
    target = (target_len or seq_len) if shape.encoder_decoder else 0
    stage = StageTokens(sequences=tokens / seq_len, source_len=seq_len, target_len=target, lm_head=True)
    return Plan(name, shape, [("pretraining", stage)])
