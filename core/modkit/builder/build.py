"""`modkit build`: run a spec's stages, merge, export, check parity, write the artifact."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import torch
from safetensors.torch import save_file

from modkit import __version__
from modkit.builder.telemetry.curves import draw_curves, have_matplotlib
from modkit.builder.training.device import check_device, cpu_state, resolve_device
from modkit.builder.training.distributed import (barrier, end_process_group, main_first, start_process_group,
                                                world_from_environment)
from modkit.builder.training.evaluation import evaluate_stage
from modkit.builder.export.onnx import ParityError
from modkit.builder.export.exporter import Exporter, positions_left
from modkit.builder.training.kept import KeptCheckpoints
from modkit.builder.telemetry.memory import StagePeak
from modkit.builder.assembly import (attach_stage, component_of, merge_pending, set_trainable,
                                     seed_stage, stage_backbone, stage_tokenizer)
from modkit.builder.training import fingerprint
from modkit.builder.export import precision as precision_check
from modkit.builder.telemetry.metrics import MetricsLog, StageMeter
from modkit.card import model_card
from modkit.tracking import Trackers
from modkit.builder.training.multi import WeightedObjectives
from modkit.builder.export.optimize import AUTO, OptimizeError, fused_operators
from modkit.builder.telemetry.peak import matmul_peak
from modkit.builder.peft_plan import PeftPlan
from modkit.builder.preflight import (check_blocks, check_peft_plan, check_spec_shape, check_stages, check_world,
                                      method_from, preflight)
from modkit.builder.telemetry.progress import StageProgress
from modkit.builder.telemetry.resources import ResourceMeter
from modkit.builder.training.optim import check_schedules, schedule_of
from modkit.builder.training.engine import (Engine, load_checkpoint, read_checkpoint_position, save_checkpoint, to_device,
                                            train_stage)
from modkit.errors import ModkitError, UserError
from modkit.fileio import atomic_dir, sha256_file
from modkit.nn.generation import generation_defaults
from modkit.nn.model import ModkitModel
from modkit.registry import Component, Registry, get_registry
from modkit.manifest import MANIFEST_VERSION, Manifest
from modkit.spec import Resolved, Spec, load_spec


NO_CURVES = ("no curves.png: drawing it needs matplotlib, which modkit[train] installs "
             "(pip install 'modkit[plot]'; then `modkit plot OUT` draws it from OUT/metrics.jsonl)")


def _component_record(component: Component, options) -> dict[str, Any]:
    return {"name": component.name, "plugin": component.plugin, "version": component.version,
            "options": options.model_dump(mode="json")}


def _method_figures(methods, total: int) -> list[dict[str, Any]]:
    """Each PEFT method's own trainable parameters and their fraction of the model's total."""
    figures = []
    for comp, _, modules in methods:
        params = {id(p): p.numel() for m in modules for p in m.parameters()}  # shared ones once
        n = sum(params.values())
        figures.append({"name": comp.name, "trainable_parameters": n, "fraction": n / total})
    return figures


def _generation_record(backbone) -> dict[str, Any]:
    """The manifest's ``generation``: the defaults the backbone's ``generate`` uses (a checkpoint's
    generation config, or the forced tokens its options set), which ``modkit run`` applies too."""
    record = generation_defaults(backbone)
    return {"generation": record} if record else {}


def _export(model: ModkitModel, objective, data, task: dict[str, Any], folder: Path, export,
            registry: Registry) -> tuple[dict, list[str]]:
    """The objective writes its task's graph(s) into ``folder``; return (parity figures, files).
    The graphs the serving task opens must be among them."""
    inputs = objective.reader.export_inputs(data)
    levels = AUTO if export.optimize == "auto" else (export.optimize,)
    fallbacks = []  # "auto": the levels given up, each with why
    for n, level in enumerate(levels):  # "auto": the fastest level whose graphs pass parity
        exporter = Exporter(folder, opset=export.opset, tolerance=export.parity_tolerance, optimize=level)
        try:
            figures = objective.export.graphs(model, exporter, inputs)
            break
        except (ParityError, OptimizeError) as e:
            if n == len(levels) - 1:
                raise
            fallbacks.append({"level": level, "reason": str(e)})
    missing = [g for g in registry.get("task", objective.task).load().graphs if g not in exporter.written]
    if missing:
        raise ModkitError(f"objective {type(objective).__name__} exported {exporter.written}, but its task "
                          f"{objective.task!r} is served from {missing}")
    graphs = [folder / name for name in exporter.written]
    figures["optimize"] = {"level": level, "fused": {p.name: fused_operators(p) for p in graphs},
                           "fallbacks": fallbacks}
    classes = objective.reader.heldout_classes(data) if export.precisions() else None
    for precision in export.precisions():  # int8 / fp16 twins, checked against fp32
        figures[precision] = precision_check.write_and_check(graphs, precision, task,
                                                             {k: v.numpy() for k, v in inputs.items()})
        if classes is not None and "model.onnx" in figures[precision]:
            figures[precision]["model.onnx"].update(precision_check.compare_accuracy(
                folder / "model.onnx", {k: v.numpy() for k, v in classes[0].items()}, classes[1].numpy(), precision))
    return figures, exporter.written


def _env_max_steps() -> int | None:
    value = os.environ.get("MODKIT_MAX_STEPS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"MODKIT_MAX_STEPS={value!r}: expected a whole number of steps >= 1")
    return int(value)


def _evaluate(model, objective, held, stage, engine: Engine, kept: KeptCheckpoints, index: int,
              step: int) -> dict[str, float]:
    """Rank 0 evaluates (the others go on to the next step and wait for it there)."""
    if not engine.is_main:
        return {}
    figures = evaluate_stage(model, objective, held, stage, engine)
    if stage.keep_checkpoints:
        kept.add(model, index, step, figures)
    return figures


def _from_record(spec: Spec, value: str | None) -> dict[str, Any]:
    """What the manifest records of a ``from``: the value, and for an ``hf:`` name the commit read."""
    if not value:
        return {}
    return {"from": value, **({"hub": spec.hub[value].record()} if value in spec.hub else {})}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def build(spec_path: str | Path, out: str | Path, *, overrides: list[str] = (), resume: bool = False,
          overwrite: bool = False, registry: Registry | None = None, progress: bool = True,
          device: str | None = None, track: list[str] = (),
          echo: Callable[[str], None] | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Build ``spec_path`` into the artifact folder ``out``; return the manifest.

    Everything that needs only the spec, its files and the backbone's shape is checked first
    (stages against the backbone, the PEFT plan on a meta copy, every stage's data:
    :func:`modkit.builder.preflight.preflight`); a failed check leaves no work folder. An
    existing ``out`` is replaced only with ``overwrite``. A build that fails or is interrupted
    later says whether its work folder can be resumed, and where it is.

    ``max_steps`` (default: the environment variable ``MODKIT_MAX_STEPS``) caps every stage's
    steps, for a quick smoke run of a spec; the manifest records the capped spec. ``track``
    adds trackers (``--track``) to the spec's ``track`` list.
    """
    echo = echo or (lambda msg: click.echo(msg, err=True))
    registry = registry or get_registry()
    if device is not None:  # --device: validated with the spec's own key
        overrides = [*overrides, f'device="{device}"']
    spec = load_spec(spec_path, list(overrides), registry=registry, track=list(track))
    rank, local_rank, world = world_from_environment()
    engine = Engine(resolve_device(spec.model.device, local_rank=local_rank), spec.model.precision,
                    spec.model.compile, rank=rank, world=world, strategy=spec.model.strategy,
                    cpu_offload=spec.model.cpu_offload)
    check_device(engine.device, engine.precision, spec.shown)
    check_world(spec, world)
    if not engine.is_main:
        echo = lambda msg: None  # noqa: E731 - one voice: rank 0 reports
    max_steps = max_steps or _env_max_steps()
    if max_steps:
        echo(f"smoke run: every stage capped at {max_steps} steps")
        for stage in spec.model.stages:
            stage.steps = min(stage.steps, max_steps)
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it with the new build")
    work = out.parent / f".{out.name}.work"
    started_group = start_process_group(engine.device, world, alone=engine.strategy == "fsdp")
    try:
        if not resume and engine.is_main:
            shutil.rmtree(work, ignore_errors=True)
        started = time.perf_counter()
        meter = ResourceMeter.start()
        torch.manual_seed(spec.model.seed)
        # Rank 0 trains the tokenizer and checks everything first; the others then load its tokenizer.
        tokenizer, backbone, bcomp = main_first(world, rank, lambda: _prepare(spec, work, registry, echo, resume))
        trackers = Trackers({r.component.name: r.component.load()(r.options, spec.source.parent, spec.model.name)
                             for r in spec.trackers} if engine.is_main else {},
                            [stage.steps for stage in spec.model.stages])
        tracking = trackers.start(spec.resolved_dict())
        try:
            manifest = _build_in(work, spec, out, tokenizer, backbone, bcomp, resume=resume, registry=registry,
                                 progress=progress, echo=echo, started=started, meter=meter, engine=engine,
                                 trackers=trackers, tracking=tracking)
        except BaseException:
            if engine.is_main:
                echo(_resume_hint(work, spec_path, out, overrides))
            trackers.finish(None, None)
            raise
        trackers.finish(manifest, out)
        if engine.is_main:
            shutil.rmtree(work, ignore_errors=True)
        # the processes end the group together, once rank 0 has written the artifact
        barrier(world)
        return manifest
    finally:
        if started_group:
            end_process_group()


def _prepare(spec: Spec, work: Path, registry: Registry, echo, resume: bool):
    """The tokenizer and the untrained backbone, once every check that needs only the spec, its
    files and the backbone's shape has passed; only then is the work folder made. What needs
    the spec alone is checked before the tokenizer trains; a resume then checks the checkpoint
    was trained with this spec and data."""
    check_schedules(spec)
    check_spec_shape(spec, registry)
    continuing = resume and read_checkpoint_position(work) is not None
    if continuing:
        fingerprint.check(work, spec)
    tokenizer, trained = stage_tokenizer(spec, work, echo, registry)
    seed_stage(spec.model.seed, -1)
    backbone, bcomp = stage_backbone(spec, tokenizer, registry)
    check_stages(spec, backbone, registry)  # again on the backbone as built: a checkpoint's, say
    check_blocks(spec, backbone)
    check_peft_plan(spec, backbone, bcomp, tokenizer)
    preflight(spec, tokenizer, bcomp, backbone.config)
    work.mkdir(parents=True, exist_ok=True)
    if not continuing:
        fingerprint.save(work, spec)
    if trained:
        tokenizer.save(work / "tokenizer.json")
    return tokenizer, backbone, bcomp


def _resuming(position: dict | None, stages: int, work: Path) -> str:
    """What --resume picks up: where in which stage the build goes on."""
    if position is None:
        return f"nothing to resume in {work}: starting from the first step"
    if position["stage"] == stages:
        return f"resuming: all {stages} stage(s) had finished; merging and exporting"
    return f"resuming stage {position['stage'] + 1}/{stages} from step {position['step']}"


def _resume_hint(work: Path, spec_path, out: Path, overrides) -> str:
    """What a failed or interrupted build leaves: a work folder to resume, or nothing."""
    position = read_checkpoint_position(work)
    if position is None:
        shutil.rmtree(work, ignore_errors=True)
        return "the build stopped before its first checkpoint: nothing to resume"
    done = f"{len(position['reports'])} stage(s) finished" + (
        f", the next one at step {position['step']}" if position["step"] else "")
    sets = "".join(f" --set {o!r}" for o in overrides)
    return (f"the build's work folder {work} holds a checkpoint ({done}); continue from it with: "
            f"modkit build {spec_path} -o {out}{sets} --resume")


@dataclass
class _Run:
    """What every stage of one build shares: where it checkpoints, the model it grows, the logs
    and the engine."""
    spec: Spec
    work: Path
    engine: Engine
    model: ModkitModel
    echo: Callable[[str], None]
    progress: bool
    resume: bool
    position: dict | None
    reports: list[dict]
    metrics: MetricsLog
    kept: KeptCheckpoints
    peak: float
    all_methods: list = field(default_factory=list)
    merged: set = field(default_factory=set)


def _build_in(work: Path, spec: Spec, out: Path, tokenizer, backbone, bcomp: Component, *, resume: bool,
              registry: Registry, progress: bool, echo, started: float, meter, engine: Engine,
              trackers: Trackers, tracking: dict[str, Any]) -> dict[str, Any]:
    """Train the stages (checkpointing into ``work``), merge, export and write ``out``; in a
    data-parallel build, every process trains and rank 0 alone writes (the others return {})."""
    position = read_checkpoint_position(work) if resume else None
    if resume:
        echo(_resuming(position, len(spec.model.stages), work))
    run = _Run(spec, work, engine, ModkitModel(backbone), echo, progress, resume, position,
               list(position["reports"]) if position else [],
               MetricsLog(work / "metrics.jsonl", trackers.line if trackers.trackers else None),
               KeptCheckpoints(work / "kept", 0), matmul_peak(engine.device, engine.precision))
    model, plan = run.model, PeftPlan.from_spec(spec)
    at_boundary = position["stage"] if position and position["step"] == 0 else None
    stage_records, data = [], None
    for i, stage in enumerate(spec.model.stages):
        merge_pending(run.all_methods, run.merged, model)  # resuming: finished stages' methods, merged as when saved
        if at_boundary == i:  # saved after stage i-1, before stage i added its modules
            load_checkpoint(work, model, None)
        resolved: list[Resolved] = spec.objectives[i]
        objs, methods, _ = attach_stage(model, [(r.component, r.options) for r in resolved], plan.stages[i],
                                         tokenizer, spec.model.seed, i)
        objective = objs[0]  # the stage's task
        run.all_methods += methods
        model.to(engine.device)  # the stage's new heads and PEFT modules join the rest
        stage_records.append((resolved, methods))
        if i >= len(run.reports):  # else finished before the interruption: its weights are in the checkpoint
            data = _run_stage(run, i, resolved, objs, methods, set_trainable(model, objs, methods))
    if not engine.is_main:  # rank 0 alone merges, exports and writes the artifact
        return {}
    if at_boundary == len(spec.model.stages):  # every stage had finished: their trained weights
        load_checkpoint(work, model, None)
    if data is None:  # every stage had finished before a resume; the export needs inputs
        last = len(spec.model.stages) - 1
        data = objective.reader.load_data(spec.data_file(last, objective).path, spec.model.stages[-1].seq_len)
    model.cpu()  # merge, export and the weights file work on CPU copies, whatever the device
    merge_figures = None
    if spec.model.export.merge:
        merge_figures = merge_pending(run.all_methods, run.merged, model, objective.reader.export_inputs(data),
                               spec.model.export.parity_tolerance)
    record = objective.export.task_record(spec.model.stages[-1].seq_len)
    record.typed(registry.get("task", record.task).load().record, f"objective {type(objective).__name__}")
    task = record.as_dict()
    tcomp = spec.tokenizer.component if spec.tokenizer else component_of("tokenizer", tokenizer, registry)
    manifest = {
        "format": "modkit-artifact", "version": MANIFEST_VERSION, "modkit_version": __version__,
        "name": spec.model.name, "seed": spec.model.seed, "spec": spec.resolved_dict(),
        "components": _components_record(run, tcomp, bcomp, stage_records),
        "task": task,
        **_generation_record(model.backbone),
        "training": {"device": str(engine.device), "precision": engine.precision, "compile": engine.compile,
                     "processes": engine.world, "strategy": engine.strategy, "cpu_offload": engine.cpu_offload,
                     "matmul_peak_flops": round(run.peak)},
        "stages": run.reports,
        **({"merge": merge_figures} if merge_figures else {}),
        **({"tracking": tracking} if tracking else {}),
    }
    written = _write_artifact(run, out, manifest, tokenizer, objective, data, task, registry, started, meter)
    if "parity" in manifest:
        echo(f"ONNX parity: max abs diff {manifest['parity']['max_abs_diff']:.2e}")
    echo(f"wrote {out} in {manifest['build_seconds']} s")
    return written.to_json()


def _run_stage(run: _Run, i: int, resolved: list[Resolved], objs: list, methods: list,
               parameters: tuple[int, int]) -> Any:
    """Train stage ``i`` (from where a resume left it), report it in ``run.reports``, and merge
    what the next stage must start from; return its task's data (the export's inputs)."""
    spec, engine, model, stage = run.spec, run.engine, run.model, run.spec.model.stages[i]
    rank, world = engine.rank, engine.world
    trainable, total = parameters
    objective = objs[0]
    files = [main_first(world, rank, lambda o=obj: spec.data_file(i, o)) for obj in objs]
    datas = [obj.reader.load_data(f.path, stage.seq_len) for obj, f in zip(objs, files)]
    data, held, data_record = datas[0], datas[0], {"data": files[0].record}
    if stage.eval_data:
        eval_file = main_first(world, rank, lambda: spec.data_file(i, objective, "eval_data"))
        held = objective.reader.load_eval_data(eval_file.path, stage.seq_len)
        data_record["eval_data"] = eval_file.record
    names = [r.component.name for r in resolved]
    trainer, train_data = (objective, data) if len(objs) == 1 else (
        WeightedObjectives([(n, o, r.weight) for n, o, r in zip(names, objs, resolved)]), datas)
    label = f"stage {i + 1}/{len(spec.model.stages)} {' + '.join(names)}"
    start = run.position["step"] if run.position is not None and run.position["stage"] == i else 0
    if engine.is_main:
        run.metrics.rewind(i + 1, start)
        run.kept.rewind(i + 1, start)
    run.kept.keep = stage.keep_checkpoints
    stage_meter = StageMeter(i + 1, names[0], total, run.peak, run.metrics if engine.is_main else None, trainable,
                             processes=world)
    with StageProgress(label, stage.steps, start, tokens_per_step=stage.batch_size * stage.accumulate * stage.seq_len,
                       lr_of=schedule_of(spec.schedules[i], stage),
                       quiet=not run.progress or not engine.is_main) as tick:
        def on_step(record) -> None:
            stage_meter(record)
            tick(record.step, record.loss, mfu=stage_meter.running_mfu())

        stage_peak = StagePeak(engine.device)
        trained = train_stage(
            model, trainer, train_data, stage, seed=spec.model.seed, index=i, checkpoint_dir=run.work,
            resume=run.resume, reports=run.reports, engine=engine, on_step=on_step,
            evaluate=lambda step: _evaluate(model, objective, held, stage, engine, run.kept, i + 1, step),
            optimizer=spec.optimizers[i], schedule=spec.schedules[i],
            gather_everywhere=i + 1 < len(spec.model.stages))
    peak_memory = stage_peak.gather(engine.rank, engine.world)  # every process measures, rank 0 records
    figures = stage_meter.last_eval
    if len(objs) > 1:  # every objective's own figures, by name
        figures = {f"{names[0]}.{k}": v for k, v in figures.items()}
        for name, obj, d in zip(names[1:], objs[1:], datas[1:]) if engine.is_main else ():
            # rank 0 alone: under FSDP it alone holds the last stage's gathered weights
            figures.update({f"{name}.{k}": v for k, v in evaluate_stage(model, obj, d, stage, engine).items()})
    losses = trained.total
    report = {
        "objective": names[0], "peft": [c.name for c, _, _ in methods],
        "steps": stage.steps, "trainable_parameters": trainable, "total_parameters": total,
        "peft_parameters": _method_figures(methods, total),
        "loss_first_10": _mean(losses[:10]), "loss_last_10": _mean(losses[-10:]), "eval": figures,
        **stage_meter.summary(), **data_record, **({"peak_memory": peak_memory} if peak_memory else {})}
    if len(objs) > 1:  # each objective's own loss, as well as the weighted sum
        own = {n: [row[k] for row in trained.parts] for k, n in enumerate(names)}
        report["losses"] = {n: {"weight": r.weight, "loss_first_10": _mean(own[n][:10]),
                                "loss_last_10": _mean(own[n][-10:])} for n, r in zip(names, resolved)}
    run.reports.append(report)
    run.echo(f"{label}: " + (f"loss {report['loss_first_10']:.3f} -> {report['loss_last_10']:.3f}"
                             if losses else "no training steps")
             + "".join(f", {k} {v:.4g}" for k, v in figures.items())
             + f", {stage_meter.tokens:,} tokens at {report['tokens_per_second']:,.0f} tok/s, "
               f"{stage_meter.mfu_text()}")
    if i + 1 < len(spec.model.stages):  # so the checkpoint has the shape the next stage starts from
        checked = merge_pending(run.all_methods, run.merged, model,
                         to_device(objective.reader.export_inputs(data), engine.device), spec.model.export.parity_tolerance)
        if checked:
            report["merge"] = checked
    if engine.is_main:
        save_checkpoint(run.work, model, None, stage=i + 1, step=0, losses=[], reports=run.reports)
    return data


def _components_record(run: _Run, tcomp: Component, bcomp: Component, stage_records: list) -> dict[str, Any]:
    """The manifest's ``components``: each component with its options, and for every stage's PEFT
    method whether the artifact keeps it and whether it was merged."""
    spec, model = run.spec, run.model
    live = set(model.modules())
    return {
        "tokenizer": {**{k: getattr(tcomp, k) for k in ("name", "plugin", "version")},
                      **_from_record(spec, spec.model.tokenizer.from_)},
        "backbone": {**_component_record(bcomp, model.backbone.config),
                     "max_positions": positions_left(model.backbone),
                     **_from_record(spec, spec.model.backbone.from_)},
        "stages": [{"objective": _component_record(rs[0].component, rs[0].options),
                    "objectives": [{**_component_record(r.component, r.options), "weight": r.weight} for r in rs],
                    "peft": [{**_component_record(c, m.options), "kept": any(x in live for x in mods),
                              "merged": id(m) in run.merged, **_from_record(spec, method_from(spec, i, j))}
                             for j, (c, m, mods) in enumerate(methods)],
                    "optimizer": _component_record(opt.component, opt.options),
                    "schedule": _component_record(sched.component, sched.options)}
                   for i, ((rs, methods), opt, sched) in enumerate(zip(stage_records, spec.optimizers, spec.schedules))],
    }


def _write_artifact(run: _Run, out: Path, manifest: dict[str, Any], tokenizer, objective, data, task: dict[str, Any],
                    registry: Registry, started: float, meter) -> Manifest:
    """Write ``out`` at once (a temporary folder renamed): tokenizer, weights, ONNX graphs,
    metrics, kept checkpoints, curves, the manifest listing every file, and the model card."""
    spec, model = run.spec, run.model
    with atomic_dir(out) as tmp:
        tokenizer.save(tmp / "tokenizer.json")
        save_file(cpu_state(model), str(tmp / "model.safetensors"))
        if spec.model.export.onnx:
            manifest["parity"], manifest["graphs"] = _export(model, objective, data, task, tmp, spec.model.export, registry)
        if run.metrics.path.exists():
            shutil.copyfile(run.metrics.path, tmp / "metrics.jsonl")
        if run.kept.records:
            shutil.copytree(run.kept.folder, tmp / "checkpoints", ignore=shutil.ignore_patterns("kept.json"))
            manifest["checkpoints"] = run.kept.manifest()
        manifest["files"] = {f.relative_to(tmp).as_posix(): sha256_file(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        if (tmp / "metrics.jsonl").exists():
            if have_matplotlib():
                draw_curves(tmp / "metrics.jsonl", tmp / "curves.png")  # unlisted: `modkit plot` may redraw it
            else:
                run.echo(NO_CURVES)
        manifest["build_seconds"] = round(time.perf_counter() - started, 1)
        manifest["resources"] = meter.stop()
        written = Manifest.model_validate(manifest)  # the schema every reader of the artifact uses
        written.write(tmp)
        (tmp / "README.md").write_text(model_card(written.to_json()), encoding="utf-8")  # unlisted: made from the manifest
    return written
