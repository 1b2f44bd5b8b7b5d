"""The build spec: a TOML file validated into one resolved object before any work starts.

Validation runs in two passes, and every problem of both is reported at once:
1. the spec's own structure (pydantic models below, unknown keys forbidden);
2. each component section against the options model of the component it names.

Both passes are strict: TOML has types, so ``d_model = "128"`` is an error naming the key, not
a string quietly read as a number (an integer is still a valid float: ``lr = 1``).
"""
from __future__ import annotations

import difflib
import glob
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from modkit.errors import SpecError, UserError
from modkit.options import Options, no_such_key
from modkit.registry import Component, Registry, get_registry
from modkit.hub import HubFolder, check_name, is_hub_name
from modkit.hub import resolve as resolve_hub
from modkit.sources import DataFile, infer_source, prepare

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ComponentSection(BaseModel):
    """``use`` names a component or preset; every other key is one of its options."""

    model_config = ConfigDict(extra="allow")
    use: str

    def option_values(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TokenizerSection(ComponentSection):
    use: str = "bpe"
    train_on: list[str] = Field(default_factory=list, description=(
        "Text to train on: files or globs (compressed or not), or any file a data source reads (its text column)."))

    @field_validator("train_on", mode="before")
    @classmethod
    def _one_file_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value
    from_: str | None = Field(None, alias="from", description=(
        "A tokenizer file or folder, or hf:ORG/NAME[@REVISION] in the Hugging Face cache, to load instead of training."))


class BackboneSection(ComponentSection):
    use: str = "gpt"
    from_: str | None = Field(None, alias="from", description=(
        "A Hugging Face checkpoint folder, or hf:ORG/NAME[@REVISION] in the Hugging Face cache, to start from."))


class DataSection(ComponentSection):
    """A stage's data as a table: ``use`` names a source (default: inferred from ``path``),
    every other key is one of its options (``path``, ``fields``, ``split``, ``on_bad_rows``...)."""

    use: str | None = None


DataValue = Annotated[str | DataSection, Field(description=(
    "A file or glob (its source inferred from its ending: .txt, .jsonl, .csv, .parquet..., compressed or not), "
    "or a table { use = SOURCE, path = ..., fields = {...} }."))]


class Stage(_Strict):
    objective: ComponentSection | Annotated[list[ComponentSection], Field(min_length=1)] = Field(
        description="An objective, or several trained together on summed losses (each may set `weight`, "
                    "default 1); the first is the stage's task.")
    peft: list[ComponentSection] = Field(default_factory=list)
    data: DataValue
    steps: int = Field(ge=0, description="Training steps; 0 attaches the objective untrained (serve a checkpoint as it is).")
    recipe: str | None = Field(None, description="A recipe preset (registry.toml) whose keys this stage starts from.")
    optimizer: ComponentSection | None = Field(
        None, description="The optimizer, { use = NAME, <options> }; default { use = \"adamw\", betas = [0.9, 0.98] }.")
    schedule: ComponentSection | None = Field(
        None, description="The lr schedule, { use = NAME, <options> }; default cosine to a tenth of the peak.")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(16, gt=0)
    seq_len: int = Field(128, gt=1)
    weight_decay: float = Field(0.01, ge=0, description="Weight decay of matrices and embeddings (see the optimizer's "
                                                        "decay_biases_and_norms).")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps of the schedule (unless it sets its own).")
    max_grad_norm: float = Field(1.0, ge=0, validation_alias=AliasChoices("max_grad_norm", "grad_clip"),
                                 description="Clip the gradients' global L2 norm to this (0: no clipping).")
    checkpoint_every: int = Field(100, gt=0, description="Steps between resumable checkpoints.")
    accumulate: int = Field(1, gt=0, description="Micro-batches of batch_size per optimizer step (gradient accumulation).")
    eval_every: int = Field(0, ge=0, description="Steps between evaluations on held-back data (0: at the stage's end only).")
    eval_data: DataValue | None = Field(None, description="Data to evaluate on instead of the data's held-back part.")
    eval_examples: int = Field(256, gt=0, description="Held-back examples the evaluation loss averages over, at most.")
    keep_checkpoints: int = Field(0, ge=0, description="Weight snapshots kept in OUT/checkpoints: the last k evaluations' and the best.")
    activation_checkpointing: bool = Field(
        False, description="Recompute each backbone block's activations in the backward pass instead of keeping them.")


class Export(_Strict):
    merge: bool = True
    onnx: bool = True
    opset: int = Field(17, ge=17)
    parity_tolerance: float = Field(1e-4, gt=0)
    #: "auto": the fastest of transformer, basic, none whose graphs pass the parity check
    optimize: Literal["auto", "none", "basic", "transformer"] = "auto"
    #: "int8": also write dynamically quantised graphs (model.int8.onnx...) beside the fp32 ones;
    #: "fp16": half-precision graphs for GPUs (model.fp16.onnx...); a list for both
    quantize: str | list[str] = "none"

    @field_validator("quantize")
    @classmethod
    def _known_precisions(cls, value: str | list[str]) -> str | list[str]:
        for precision in [value] if isinstance(value, str) else value:
            if precision not in ("int8", "fp16") and not (precision == "none" and isinstance(value, str)):
                raise ValueError(f"{precision!r} is not one of 'none', 'int8', 'fp16' (or a list of 'int8' and 'fp16')")
        return value

    def precisions(self) -> list[str]:
        """The precisions written beside fp32, in order."""
        given = [self.quantize] if isinstance(self.quantize, str) else self.quantize
        return list(dict.fromkeys(p for p in given if p != "none"))


DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class SpecModel(_Strict):
    name: str
    seed: int = 0
    device: str = Field("auto", pattern=DEVICE_PATTERN,
                        description='Where to train: "auto" (cuda, else mps, else cpu), "cpu", "cuda", "cuda:N", "mps".')
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast dtype of forward passes; weights and the artifact stay fp32.")
    compile: bool = Field(False, description="Train through torch.compile.")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description='How processes share training: "ddp" (a full copy each) or "fsdp" (weights, '
                           'gradients and optimizer state sharded with FSDP2).')
    cpu_offload: bool = Field(
        False, description='Under strategy = "fsdp": keep the weight shards, gradients and optimizer state in CPU '
                           'memory, copying each block to the device as it runs.')
    tokenizer: TokenizerSection = Field(default_factory=lambda: TokenizerSection(use="bpe"))
    backbone: BackboneSection = Field(default_factory=lambda: BackboneSection(use="gpt"))
    stages: list[Stage] = Field(min_length=1)
    export: Export = Field(default_factory=Export)
    track: list[str | ComponentSection] = Field(default_factory=list, description=(
        'Trackers the build logs to besides metrics.jsonl: names ("tensorboard", "mlflow") or tables with options.'))


@dataclass(frozen=True)
class Resolved:
    """A component section resolved: the component and its validated options."""

    component: Component
    options: Options
    section: str  # key path in the spec, for messages
    weight: float = 1.0  # an objective's share of its stage's summed loss


@dataclass
class Spec:
    """A validated spec with every component resolved and every path made absolute."""

    source: Path
    model: SpecModel
    tokenizer: Resolved | None  # None when loaded with `from`
    backbone: Resolved | None  # None when loaded with `from`
    objectives: list[list[Resolved]] = field(default_factory=list)  # per stage; the first is the task
    peft: list[list[Resolved]] = field(default_factory=list)  # per stage
    optimizers: list[Resolved] = field(default_factory=list)  # per stage
    schedules: list[Resolved] = field(default_factory=list)  # per stage
    sources: list[dict[str, Resolved]] = field(default_factory=list)  # per stage: "data", "eval_data"
    trackers: list[Resolved] = field(default_factory=list)
    train_on: list[Resolved] = field(default_factory=list)  # the tokenizer's text, as sources
    hub: dict[str, HubFolder] = field(default_factory=dict)  # hf: names resolved so far
    shown: str = ""  # the spec's path as the user gave it, for messages (as load_spec's errors print it)

    def from_path(self, value: str) -> Path:
        """A ``from``: a folder or file relative to the spec, or an ``hf:`` name resolved through
        the Hugging Face cache (once; its commit is then in :attr:`hub`)."""
        if not is_hub_name(value):
            return self.path(value)
        if value not in self.hub:
            try:
                self.hub[value] = resolve_hub(value)
            except UserError as e:
                raise type(e)(f"{self.shown}: {e}") from None
        return self.hub[value].path

    def path(self, value: str) -> Path:
        return (self.source.parent / value).resolve()

    def tokenizer_text(self) -> list[Path]:
        """The text files the tokenizer trains on: each ``train_on`` entry as a text objective
        would read it (a plain text file as it is; globs, compressed files and other sources
        streamed into one text file)."""
        return [self._prepared(res, "text").path for res in self.train_on]

    def _prepared(self, res: Resolved, reads: str) -> DataFile:
        try:
            source = res.component.load()(res.options, self.source.parent)
            return prepare(res.component.name, source, reads)
        except UserError as e:
            raise UserError(f"{self.shown}: {res.section}: {e}") from None

    def data_file(self, stage: int, objective, key: str = "data") -> DataFile:
        """What ``objective`` reads of ``stages[stage].data`` (or ``eval_data``): see
        :func:`modkit.sources.prepare`."""
        return self._prepared(self.sources[stage][key], getattr(objective, "reads", "records"))

    def resolved_dict(self) -> dict[str, Any]:
        """The spec with every component's full option values, for the manifest."""
        out = self.model.model_dump(mode="json", by_alias=True)
        for key, res in (("tokenizer", self.tokenizer), ("backbone", self.backbone)):
            if res is not None:
                out[key].update(res.options.model_dump(mode="json"))
        for i, stage in enumerate(out["stages"]):
            sections = stage["objective"] if isinstance(stage["objective"], list) else [stage["objective"]]
            for section, res in zip(sections, self.objectives[i]):
                section.update(res.options.model_dump(mode="json"))
            for j, p in enumerate(stage["peft"]):
                p.update(self.peft[i][j].options.model_dump(mode="json"))
            for key, res in (("optimizer", self.optimizers[i]), ("schedule", self.schedules[i])):
                stage[key] = {"use": res.component.name, **res.options.model_dump(mode="json")}
            for key, res in self.sources[i].items():
                stage[key] = {"use": res.component.name, **res.options.model_dump(mode="json")}
        out["track"] = [{"use": res.component.name, **res.options.model_dump(mode="json")} for res in self.trackers]
        return out


def key_path(loc: tuple) -> str:
    """('stages', 1, 'peft', 0, 'r') -> 'stages[1].peft[0].r'"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pydantic_problems(err: ValidationError, prefix: tuple = (), *, spec_tables: bool = False) -> list[tuple[str, str]]:
    """(key path, message) per error; ``spec_tables``: the errors are of :class:`SpecModel`."""
    problems = []
    for e in err.errors():
        # a model validator's error has an empty loc part; its message a "Value error, " prefix
        loc = prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and (p == "" or p.startswith("function-"))))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and spec_tables and _table_of(loc) in _TABLES:
            msg = _no_such_spec_key(loc)
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not isinstance(e["input"], (dict, list)):
            msg += f" (got {e['input']!r}{_quoted_hint(e)})"
        problems.append((key_path(loc), msg))
    return problems


#: the spec's own tables that forbid unknown keys (component sections take their options)
_TABLES = {(): ("the spec", SpecModel), ("stages",): ("a stage", Stage), ("export",): ("[export]", Export)}


def _table_of(loc: tuple) -> tuple:
    """('stages', 0, 'stepz') -> ('stages',); a top-level key -> ()"""
    return loc[:1] if len(loc) > 1 else ()


def _no_such_spec_key(loc: tuple) -> str:
    """A key of one of the spec's own tables that the table does not take."""
    owner, model = _TABLES[_table_of(loc)]
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return no_such_key(owner, str(loc[-1]), keys, noun="key")


def _takes_tuple(annotation: Any) -> bool:
    """tuple[...], or a union with one (``tuple[float, float] | None``)."""
    return typing.get_origin(annotation) is tuple or any(_takes_tuple(a) for a in typing.get_args(annotation)
                                                          if typing.get_origin(annotation) in (typing.Union, types.UnionType))


def _arrays_as_tuples(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """TOML has arrays, not tuples: an array given to a tuple field is one (strict validation
    takes no list for a tuple, and everything else it checks strictly)."""
    fields = model.model_fields
    return {k: tuple(v) if isinstance(v, list) and k in fields and _takes_tuple(fields[k].annotation) else v
            for k, v in values.items()}


def _quoted_hint(error: dict) -> str:
    """A number or boolean written as a TOML string: say how to write it."""
    value = error["input"]
    if error["type"] not in ("int_type", "float_type", "bool_type") or not isinstance(value, str):
        return ""
    try:
        tomllib.loads(f"v = {value}")
    except tomllib.TOMLDecodeError:
        return ""
    return ", a string: write it without quotes"


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``stages[1].steps=50`` -> (['stages', 1, 'steps'], 50). Values are read as TOML,
    falling back to a plain string, so ``--set name=demo`` needs no quotes."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected key.path=value")
    path: list[str | int] = []
    for part in key.strip().replace("]", "").replace("[", ".").split("."):
        if part == "":
            raise UserError(f"--set {text!r}: malformed key path {key!r}")
        path.append(int(part) if part.isdigit() else part)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def _apply_override(data: dict, path: list[str | int], value: Any, text: str) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            if isinstance(part, str) and isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise UserError(f"--set {text!r}: {key_path(tuple(path[: i + 1]))} does not exist in the spec") from None
    if isinstance(path[-1], int) and not (isinstance(node, list) and path[-1] < len(node)):
        raise UserError(f"--set {text!r}: {key_path(tuple(path))} does not exist in the spec")
    node[path[-1]] = value


def _resolve(registry: Registry, kind: str, section: Any, default: str | None, loc: str,
             problems: list[tuple[str, str]], structural: tuple[str, ...] = ()) -> Resolved | None:
    """Resolve a raw section ``{use = ..., <options>}`` against the component it names."""
    if not isinstance(section, dict):
        return None  # the structural pass reports it
    name = section.get("use", default)
    if not isinstance(name, str):
        return None
    try:
        component, preset_values = registry.resolve(kind, name)
    except UserError as e:
        problems.append((f"{loc}.use", str(e)))
        return None
    values = {**preset_values, **{k: v for k, v in section.items() if k not in ("use", *structural)}}
    try:
        options = component.options.model_validate(_arrays_as_tuples(component.options, values), strict=True)
    except ValidationError as e:
        fields = [f for f in component.options.model_fields if f not in structural]
        for sub_loc, msg in _pydantic_problems(e):
            if msg == "Extra inputs are not permitted":
                msg = no_such_key(component.name, sub_loc, fields)
            problems.append((f"{loc}.{sub_loc}" if sub_loc else loc, msg))
        return None
    return Resolved(component, options, loc)


#: a stage's optimizer and schedule when its spec names none (modkit's behaviour before they
#: were components: AdamW with beta2 0.98; warm-up from lr/warmup, then cosine to a tenth)
DEFAULT_OPTIMIZER = {"use": "adamw", "betas": [0.9, 0.98]}
DEFAULT_SCHEDULE = {"use": "cosine", "floor": 0.1, "warmup_from_zero": False}


def resolve_default(registry: Registry, kind: str) -> Resolved:
    """The default optimizer or schedule of a stage, resolved."""
    section = DEFAULT_OPTIMIZER if kind == "optimizer" else DEFAULT_SCHEDULE
    problems: list[tuple[str, str]] = []
    resolved = _resolve(registry, kind, dict(section), None, kind, problems)
    if resolved is None:
        raise UserError(f"the default {kind} {section['use']!r} is not available: {problems[0][1]}")
    return resolved


def _resolve_training(registry: Registry, stage: dict, loc: str,
                      problems: list[tuple[str, str]]) -> tuple[Resolved | None, Resolved | None]:
    """A stage's optimizer and schedule sections (the defaults where absent)."""
    out = []
    for kind, default in (("optimizer", DEFAULT_OPTIMIZER), ("schedule", DEFAULT_SCHEDULE)):
        section = stage.get(kind, default)
        out.append(_resolve(registry, kind, section, None, f"{loc}.{kind}", problems))
    schedule = stage.get("schedule")
    if isinstance(schedule, dict) and {"warmup_steps", "warmup_ratio"} & set(schedule) and "warmup_steps" in stage:
        problems.append((f"{loc}.warmup_steps", "set the warm-up once: here or in the stage's schedule "
                                                "(schedule.warmup_steps)"))
    return out[0], out[1]


def _resolve_objectives(registry: Registry, sections: Any, loc: str,
                        problems: list[tuple[str, str]]) -> list[Resolved | None]:
    """One objective section, or a list of them, each with an optional ``weight``."""
    if isinstance(sections, dict):
        sections, locs = [sections], [loc]
    elif isinstance(sections, list):
        locs = [f"{loc}[{j}]" for j in range(len(sections))]
    else:
        return [None]  # the structural pass reports it
    out = []
    for section, where in zip(sections, locs):
        weight = section.get("weight", 1.0) if isinstance(section, dict) else 1.0
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            problems.append((f"{where}.weight", f"expected a number greater than 0 (got {weight!r})"))
            weight = 1.0
        res = _resolve(registry, "objective", section, None, where, problems, ("weight",))
        out.append(res if res is None else Resolved(res.component, res.options, res.section, float(weight)))
    return out


def _merge_recipe(recipe: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """The stage's keys over its recipe's, table by table: ``optimizer = { eps = 1e-6 }`` keeps the
    recipe's optimizer and its other options; a table naming another component (``use``) replaces
    the recipe's whole."""
    out = dict(recipe)
    for key, value in stage.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and base.get("use") in (None, value.get("use", base.get("use"))):
            out[key] = {**base, **value}
        else:
            out[key] = value
    schedule = out.get("schedule")
    if "warmup_steps" in stage and isinstance(schedule, dict) and {"warmup_steps", "warmup_ratio"} & set(schedule):
        # the stage's own warmup_steps overrides the recipe's schedule's warm-up
        rest = {k: v for k, v in schedule.items() if k not in ("warmup_steps", "warmup_ratio")}
        out["schedule"] = {**rest, "warmup_steps": out.pop("warmup_steps")}
    return out


def _apply_recipes(registry: Registry, data: dict, problems: list[tuple[str, str]]) -> None:
    """Expand every stage's ``recipe`` (a preset of kind "recipe") into the stage's keys."""
    stages = data.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        if not isinstance(stage, dict) or "recipe" not in stage:
            continue
        name = stage["recipe"]
        preset = registry.presets.get(name) if isinstance(name, str) else None
        if preset is None or preset.kind != "recipe":
            known = sorted(p.name for p in registry.presets.values() if p.kind == "recipe")
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            problems.append((f"stages[{i}].recipe", f"unknown recipe {name!r}"
                             + (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "")
                             + f" Known recipes: {', '.join(known) or 'none'}."))
            continue
        objective = preset.values.get("objective")
        if isinstance(objective, dict) and isinstance(stage.get("objective"), list):
            # which of the listed objectives the recipe's options are for is not ours to guess
            problems.append((f"stages[{i}].objective", f"recipe {name!r} sets objective options "
                             f"({', '.join(sorted(objective))}) for a single objective, and this stage "
                             "lists several: write them in the table of the objective they are for"))
            continue
        stages[i] = _merge_recipe(preset.values, stage)


def _preset_tokenizer(registry: Registry, data: dict, problems: list[tuple[str, str]]) -> str | None:
    """A backbone preset may bring its tokenizer (``tokenizer = NAME`` in its registry.toml table):
    it becomes the spec's ``[tokenizer] use`` when that section names none and loads none
    (``from``), so the section's other keys (``train_on``, ``vocab_size``...) still apply to it.
    Return the preset's name when it brought one."""
    bb, tok = data.get("backbone"), data.get("tokenizer", {})
    name = bb.get("use") if isinstance(bb, dict) else None
    preset = registry.presets.get(name) if isinstance(name, str) else None
    if (preset is None or preset.kind != "backbone" or preset.tokenizer is None
            or ("backbone", name) in registry.components  # a component's name wins over a preset's
            or not isinstance(tok, dict) or "use" in tok or "from" in tok):
        return None
    try:
        registry.resolve("tokenizer", preset.tokenizer)
    except UserError as e:
        problems.append(("backbone.use", f"backbone preset {name!r} brings its tokenizer, presets.{name}.tokenizer = "
                                         f"{preset.tokenizer!r} in {preset.source}: {e}"))
        return None
    data["tokenizer"] = {"use": preset.tokenizer, **tok}
    return name


def load_spec(path: str | Path, overrides: list[str] = (), *, registry: Registry | None = None,
              track: list[str] = ()) -> Spec:
    """Read, override, validate and resolve a spec; raise SpecError listing every problem.
    ``track`` adds trackers to the spec's ``track`` list (``modkit build --track``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a spec file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(str(path), [("", f"not valid TOML: {e}")]) from None
    for text in overrides:
        _apply_override(data, *parse_override(text), text)
    if track:
        given = data.setdefault("track", [])
        if isinstance(given, list):
            named = {t.get("use") if isinstance(t, dict) else t for t in given}
            given += [name for name in dict.fromkeys(track) if name not in named]
    registry = registry or get_registry()
    problems: list[tuple[str, str]] = []
    _apply_recipes(registry, data, problems)
    backbone_from = data.get("backbone", {}).get("from") if isinstance(data.get("backbone"), dict) else None
    if "tokenizer" not in data and backbone_from:
        data["tokenizer"] = {"from": backbone_from}  # a checkpoint folder carries its tokenizer
    brought_by = _preset_tokenizer(registry, data, problems)
    try:
        model = SpecModel.model_validate(data, strict=True)
    except ValidationError as e:
        problems += _pydantic_problems(e, spec_tables=True)
        model = None

    # The second pass runs on the raw sections, so it reports even when the first failed.
    tok, bb = data.get("tokenizer", {}), data.get("backbone", {})
    resolved_tok = resolved_bb = None
    train_on = []
    if isinstance(tok, dict) and "from" not in tok:
        resolved_tok = _resolve(registry, "tokenizer", tok, "bpe", "tokenizer", problems, ("train_on",))
        if not tok.get("train_on"):
            brought = (f" (the tokenizer {tok['use']!r} that backbone preset {brought_by!r} brings trains on them)"
                       if brought_by else "")
            problems.append(("tokenizer", f"expected 'train_on' (text files to learn from) or 'from'{brought}"))
        given = tok.get("train_on")
        train_on = [_resolve_source(registry, f, path.parent, f"tokenizer.train_on[{i}]", problems)
                    for i, f in enumerate([given] if isinstance(given, str) else given or []) if isinstance(f, str)]
    elif isinstance(tok, dict) and set(tok) - {"from", "use"}:
        problems.append(("tokenizer", f"options {sorted(set(tok) - {'from', 'use'})} cannot be combined with "
                                      "'from' (a loaded tokenizer is used as it is, not trained)"))
    if isinstance(bb, dict):
        if "from" not in bb:
            resolved_bb = _resolve(registry, "backbone", bb, "gpt", "backbone", problems)
        elif set(bb) - {"from", "use"}:
            problems.append(("backbone", f"options {sorted(set(bb) - {'from', 'use'})} cannot be combined with "
                                         "'from' (the checkpoint's config.json sets them)"))
    objectives, peft, optimizers, schedules, sources = [], [], [], [], []
    stages = data.get("stages")
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        stage = stage if isinstance(stage, dict) else {}
        objectives.append(_resolve_objectives(registry, stage.get("objective"), f"stages[{i}].objective", problems))
        optimizer, schedule = _resolve_training(registry, stage, f"stages[{i}]", problems)
        optimizers.append(optimizer)
        schedules.append(schedule)
        methods = stage.get("peft", [])
        resolved = []
        for j, p in enumerate(methods if isinstance(methods, list) else []):
            if isinstance(p, dict) and "from" in p and set(p) - {"from", "use"}:
                problems.append((f"stages[{i}].peft[{j}]", f"options {sorted(set(p) - {'from', 'use'})} cannot be "
                                 "combined with 'from' (the adapter folder's adapter_config.json sets them)"))
            resolved.append(_resolve(registry, "peft", p, None, f"stages[{i}].peft[{j}]", problems, ("from",)))
        peft.append(resolved)
        sources.append({key: _resolve_source(registry, stage[key], path.parent, f"stages[{i}].{key}", problems)
                        for key in ("data", "eval_data") if stage.get(key) is not None})
    trackers = data.get("track", [])
    trackers = [_resolve(registry, "tracker", {"use": t} if isinstance(t, str) else t, None, f"track[{j}]", problems)
                for j, t in enumerate(trackers if isinstance(trackers, list) else [])]
    if model is not None:
        for loc, value in _paths(model):
            if is_hub_name(value):
                if check_name(value):
                    problems.append((loc, check_name(value)))
            elif glob.has_magic(value) and not glob.glob(str(path.parent / value), recursive=True):
                problems.append((loc, f"no file matches {value!r} (relative to {path.parent})"))
            elif not glob.has_magic(value) and not (path.parent / value).exists():
                problems.append((loc, f"no such file or folder: {value!r} (relative to {path.parent})"))
    if problems:
        raise SpecError(str(path), problems)
    return Spec(path.resolve(), model, resolved_tok, resolved_bb, objectives, peft, optimizers, schedules, sources,
                trackers, train_on, shown=str(path))


def _resolve_source(registry: Registry, value: Any, base: Path, loc: str,
                    problems: list[tuple[str, str]]) -> Resolved | None:
    """A stage's ``data``: a plain string is ``{path = string}`` read by the source its
    ending names; a table names its source, or leaves it to its ``path``'s ending."""
    section = {"path": value} if isinstance(value, str) else value
    if not isinstance(section, dict):
        return None  # the structural pass reports it
    given = section.get("path")
    first = given[0] if isinstance(given, list) and given else given
    inferred = infer_source(registry, first, base) if isinstance(first, str) else "text"
    return _resolve(registry, "source", section, inferred, loc, problems)


def _paths(model: SpecModel):
    for i, f in enumerate(model.tokenizer.train_on):
        yield f"tokenizer.train_on[{i}]", f
    if model.tokenizer.from_:
        yield "tokenizer.from", model.tokenizer.from_
    if model.backbone.from_:
        yield "backbone.from", model.backbone.from_
    for i, stage in enumerate(model.stages):
        for key in ("data", "eval_data"):
            value = getattr(stage, key)
            if not isinstance(value, str) and value is not None and (value.model_extra or {}).get("repo"):
                continue  # its path is inside the repository, found when it is read
            paths = value if isinstance(value, str) else (value.model_extra or {}).get("path") if value else None
            for j, one in enumerate([paths] if isinstance(paths, str) else paths or []):
                if isinstance(one, str):
                    yield f"stages[{i}].{key}" + ("" if isinstance(value, str) else ".path" +
                                                  ("" if isinstance(paths, str) else f"[{j}]")), one
        for j, method in enumerate(stage.peft):
            if "from" in method.option_values():
                yield f"stages[{i}].peft[{j}].from", method.option_values()["from"]
