"""Hugging Face checkpoint folders in and out, through formats that plugins register.

A plugin teaches modkit a family with the ``modkit_register_checkpoint_formats`` hook:
``register("gpt2", "modkit_plugins.backbones.gpt_hf:GPT2Format")``, a
:class:`modkit.interfaces.CheckpointFormat`. Its weight names live in one
:class:`~modkit.builder.hf.weight_table.WeightTable` read both ways (every tensor of the checkpoint
is taken by name or reported), and :func:`assign_state` builds the model on the meta device and
checks every parameter is filled. Weights are read from safetensors only; pickle checkpoints
are refused.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from modkit.errors import ArtifactError
from modkit.fileio import atomic_dir
from modkit.generation_config import read_hf_generation
from modkit.manifest import FILE as MANIFEST
from modkit.registry import Registry, get_registry, import_object


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: no config.json; expected a Hugging Face checkpoint folder") from None
    except ValueError as e:
        raise ArtifactError(f"{path}: not valid JSON: {e}") from None


def read_safetensors(folder: Path) -> dict[str, Any]:
    """All tensors of a checkpoint folder: model.safetensors or a sharded index."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as e:
            raise ArtifactError(f"{index}: not a safetensors index ({e})") from None
        files = [folder / s for s in shards]
    elif any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise ArtifactError(
            f"{folder}: has only pickle weights (*.bin / *.pt), which can run code when loaded; "
            "modkit reads safetensors only. Convert them once with transformers "
            "(model.save_pretrained(dir, safe_serialization=True)).")
    else:
        raise ArtifactError(f"{folder}: no model.safetensors")
    weights: dict[str, Any] = {}
    for f in files:
        try:
            weights.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise ArtifactError(f"{f}: not a readable safetensors file ({e})") from None
    return weights


def assign_state(factory: Callable[[], Any], state: dict[str, Any], source: str = "checkpoint"):
    """Build ``factory()`` on the meta device (no wasted init) and give it ``state``'s tensors."""
    import torch

    with torch.device("meta"):
        model = factory()
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:  # a converter bug or an incomplete checkpoint; say which
        raise ArtifactError(f"{source}: weights do not fit the model: missing {missing}, unexpected {extra}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _format(model_type: str, registry: Registry):
    found = registry.checkpoint_format(model_type)
    if found is None:
        known = ", ".join(sorted(registry.checkpoint_formats)) or "none"
        raise ArtifactError(f"model_type {model_type!r} is not supported (supported: {known})")
    return import_object(found[1])()


def load_hf(folder: str | Path, *, registry: Registry | None = None):
    """A Hugging Face checkpoint folder (config.json + safetensors) -> a modkit torch model,
    whose ``generate`` keeps the checkpoint's generation defaults (see
    :mod:`modkit.generation_config`)."""
    from modkit.nn.generation import set_generation_defaults

    folder = Path(folder)
    config = read_config(folder)
    model_type = config.get("model_type")
    if not model_type:
        raise ArtifactError(f"{folder / 'config.json'}: no model_type")
    defaults = read_hf_generation(folder, config)
    model = _format(model_type, registry or get_registry()).from_hf(config, read_safetensors(folder))
    set_generation_defaults(model, defaults)
    return model


def format_for(model, *, registry: Registry | None = None):
    """The registered checkpoint format that can write ``model``."""
    registry = registry or get_registry()
    for _plugin, impl in registry.checkpoint_formats.values():
        fmt = import_object(impl)()
        if fmt.handles(model):
            return fmt
    for model_type, entries in registry.format_conflicts.items():  # two plugins claim it: say which
        if any(import_object(impl)().handles(model) for _, impl in entries):
            registry.checkpoint_format(model_type)
    raise ArtifactError(f"no checkpoint format can write a {type(model).__name__}")


def save_hf(model, dest: str | Path, *, tokenizer=None, registry: Registry | None = None,
            card: str | None = None) -> Path:
    """Write a modkit model as a Hugging Face folder (config.json + model.safetensors, and
    generation_config.json with the model's generation defaults).

    ``tokenizer`` adds the tokenizer files ``transformers.AutoTokenizer`` reads: a
    :class:`modkit.Tokenizer` gives tokenizer.json and a tokenizer_config.json naming its special
    tokens; a path to a Hugging Face tokenizer.json is copied as it is. ``card`` is written as
    README.md (the model card).
    """
    from safetensors.torch import save_file

    from modkit.nn.generation import generation_defaults

    config, weights = format_for(model, registry=registry).to_hf(model)
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        config = {**_special_ids(tokenizer), **config}  # what the format writes wins
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        generation = generation_defaults(model)
        if generation:  # transformers then reads these, not config.json's generation keys
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        if isinstance(tokenizer, (str, Path)):
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")
        elif tokenizer is not None:
            _save_hf_tokenizer(tokenizer, tmp / "tokenizer.json")
            (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tokenizer), indent=2))
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
    return dest


def _special_ids(tokenizer) -> dict[str, int | None]:
    """config.json's bos/eos/pad ids from the tokenizer (None for a role it lacks): a format
    that does not write them (GPT) would leave transformers' defaults, ids past a small vocabulary."""
    return {f"{role}_token_id": tokenizer.special_id(role) for role in ("bos", "eos", "pad")}


def _save_hf_tokenizer(tokenizer, path: Path) -> None:
    """The tokenizer.json without modkit's own keys (each added token's ``modkit_roles``, which
    transformers warns about); tokenizer_config.json names the roles instead."""
    tokenizer.save(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    for entry in doc.get("added_tokens") or []:
        entry.pop("modkit_roles", None)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def export_hf(source: str | Path, dest: str | Path, *, registry: Registry | None = None,
              echo: Callable[[str], None] | None = None) -> Path:
    """What ``modkit export-hf`` does: a modkit artifact (or a checkpoint folder) -> a Hugging
    Face folder with its tokenizer files.

    An artifact keeps its task head where transformers has a class for it: the objective
    describes its head in family-neutral terms (:meth:`~modkit.objectives.ObjectiveExport.hf_head`) and
    the backbone's checkpoint format puts it on (``with_head``). Where either cannot, the
    backbone alone is written and ``echo`` says why.
    """
    from modkit.tokenization import load_tokenizer

    source = Path(source)
    model = hf_model(load_model(source, registry=registry), registry=registry, echo=echo or (lambda msg: None))
    tokenizer = None
    if (source / MANIFEST).exists():  # an artifact: its own tokenizer, read as its manifest says
        tokenizer = load_tokenizer(source, registry=registry)
    elif (source / "tokenizer.json").exists():
        try:
            tokenizer = load_tokenizer(source, registry=registry)
        except ArtifactError:  # no tokenizer plugin reads it: it is a Hugging Face file already
            tokenizer = source / "tokenizer.json"
    card = None
    if (source / "manifest.json").exists():  # an artifact: its card, for the library that reads this folder
        from modkit.card import model_card

        card = model_card(json.loads((source / "manifest.json").read_text(encoding="utf-8")), library="transformers")
    return save_hf(model, dest, tokenizer=tokenizer, registry=registry, card=card)


def without_peft(model):
    """A copy of ``model`` with its PEFT modules taken out: every role-carrying wrapper replaced by
    the linear layer inside it (``.base``), every attention prefix removed. None if it has none."""
    import copy

    from torch import nn

    from modkit.nn.blocks import Attention, iter_roles

    wrapped = [m for _, _, m in _role_layers(model) if not isinstance(m, nn.Linear)]
    prefixed = [m for m in model.modules() if isinstance(m, Attention) and m.prefix is not None]
    if not wrapped and not prefixed:
        return None
    base = copy.deepcopy(model)
    for parent, attr, _ in list(iter_roles(base)):
        layer = getattr(parent, attr)
        while not isinstance(layer, nn.Linear):
            layer = layer.base
        setattr(parent, attr, layer)
    for m in base.modules():
        if isinstance(m, Attention):
            m.prefix = None
    return base


def _role_layers(model):
    from modkit.nn.blocks import iter_roles

    return [(parent, attr, getattr(parent, attr)) for parent, attr, _ in iter_roles(model)]


def hf_model(model, *, registry: Registry | None = None, echo: Callable[[str], None] = lambda msg: None):
    """What ``export-hf`` writes for a loaded model: its base without PEFT modules (merged LoRA
    stays in the weights), with the task head where the format can hold it."""
    base = without_peft(model)
    if base is not None:
        echo("note: PEFT modules that did not merge (adapters, prefixes, unmerged LoRA) are left out; "
             "`modkit export-peft` writes those Hugging Face PEFT can read")
        model = base
    try:
        format_for(model, registry=registry)
    except ArtifactError:
        if not hasattr(model, "backbone"):
            raise
        model = _with_task_head(model, registry, echo)
    return model


def _with_task_head(model, registry: Registry | None, echo: Callable[[str], None]):
    """The artifact's backbone with its task head in a form the backbone's format writes, or
    the bare backbone (and a message saying why)."""
    backbone, objective = model.backbone, model.objective()
    fmt = format_for(backbone, registry=registry)
    head = objective.export.hf_head(backbone) if objective is not None else None
    headed = fmt.with_head(backbone, head) if head is not None and hasattr(fmt, "with_head") else None
    if headed is None:
        task = getattr(objective, "task", None)
        why = (f"the {task!r} head has no equivalent in transformers for this backbone" if head is None
               else f"transformers' {type(backbone).__name__} classes have no {head['kind']} head like this one")
        echo(f"note: {why}; wrote the backbone without the task head")
        return backbone
    return headed


def tokenizer_config(tokenizer) -> dict[str, Any]:
    """transformers' tokenizer_config.json for a fast tokenizer with these special tokens."""
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for role, token in tokenizer.special_tokens.items():
        config[f"{role}_token"] = token
    return config


def _folder(path: str | Path) -> Path:
    from modkit.hub import is_hub_name, resolve

    return resolve(path).path if is_hub_name(path) else Path(path)


def load_model(path: str | Path, *, peft: list[str | Path] = (), **kwargs: Any):
    """A modkit artifact folder (manifest.json) or a Hugging Face checkpoint folder, with the
    Hugging Face PEFT adapter folders ``peft`` applied in order. Any of them may be an
    ``hf:ORG/NAME[@REVISION]`` name, read through the Hugging Face cache."""
    path = _folder(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: expected a folder (a modkit artifact or a Hugging Face checkpoint)")
    if (path / MANIFEST).exists():
        from modkit.builder.assembly import load_torch_model

        model = load_torch_model(path, **kwargs)
    else:
        model = load_hf(path, **kwargs)
    if peft:
        from modkit.builder.hf.peft_folders import apply_peft_folder

        for folder in peft:
            apply_peft_folder(model, _folder(folder), registry=kwargs.get("registry"))
        model.eval().requires_grad_(False)
    return model
