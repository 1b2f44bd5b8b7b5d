"""The `modkit` command line. User mistakes exit 2 with one line; modkit's own faults exit 1."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import click

from modkit.cli.export_hf import export_hf, export_peft
from modkit.cli.tokenize import tokenize
from modkit.cli.cache import cache
from modkit.errors import UnknownComponentError, UserError
from modkit.registry import KINDS, get_registry
from modkit.runtime import DEFAULT_BATCH_SIZE


class _Group(click.Group):
    """Turns modkit's exceptions into exit codes: UserError -> 2, anything else -> 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C: the command has said what it leaves behind
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # the reader went away (`modkit list | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except UserError as e:
            if ctx.params.get("debug"):
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except Exception as e:  # a bug in modkit or a plugin
            if ctx.params.get("debug"):
                traceback.print_exc()
            click.echo(f"modkit: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)",
                       err=True)
            ctx.exit(1)

    # Commands that plugins register (modkit_register_commands), imported only when used.
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in self._plugin_commands(ctx):
            command = self._plugin_commands(ctx)[name].load()
        return command

    @staticmethod
    def _plugin_commands(ctx: click.Context) -> dict:
        try:
            registry = get_registry((ctx.params or {}).get("registry_path"))
        except UserError:
            return {}  # a broken --registry is reported when a command uses it
        return {c.name: c for (kind, _), c in registry.components.items() if kind == "command"}


@click.group(cls=_Group)
@click.option("--registry", "registry_path", type=click.Path(dir_okay=False), default=None,
              help="A registry.toml adding plugins and presets (default: $MODKIT_REGISTRY; "
                   "a registry.toml in the working directory is never read by itself).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="modkit")
@click.pass_context
def main(ctx: click.Context, registry_path: str | None, debug: bool) -> None:
    """Build transformer language models from named, pluggable parts."""
    ctx.obj = {"registry_path": registry_path}


def _registry(ctx: click.Context):
    return get_registry(ctx.obj["registry_path"])


@main.command("list", short_help="Every component and preset, and plugins that failed.")
@click.option("--kind", type=click.Choice((*KINDS, "recipe")), default=None,
              help="Only this kind of component (or recipe: the stage presets).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_context
def list_components(ctx: click.Context, kind: str | None, as_json: bool) -> None:
    """Every component: kind, name, plugin, version, doc; presets; failed plugins."""
    reg = _registry(ctx)
    comps = [c for (k, _), c in sorted(reg.components.items()) if kind in (None, k)]
    presets = [p for p in sorted(reg.presets.values(), key=lambda p: p.name) if kind in (None, p.kind)]
    conflicts = {f"{k}.{n}": [c.plugin for c in cs] for (k, n), cs in reg.conflicts.items()}
    if kind is None:  # Hugging Face checkpoint formats two plugins claim
        conflicts.update({f"checkpoint_format.{t}": [p for p, _ in es] for t, es in reg.format_conflicts.items()})
    if as_json:
        click.echo(json.dumps({
            "components": [{"kind": c.kind, "name": c.name, "plugin": c.plugin, "version": c.version, "doc": c.doc}
                           for c in comps],
            "presets": [{"name": p.name, "kind": p.kind, "use": p.use, "doc": p.doc,
                         **({"tokenizer": p.tokenizer} if p.tokenizer else {})} for p in presets],
            "failed_plugins": [{"plugin": f.plugin, "error": f.error} for f in reg.failures],
            "conflicts": conflicts}, indent=2))
        return
    click.echo(f"{'KIND':<10} {'NAME':<16} {'FROM':<24} DOC")
    for c in comps:
        click.echo(f"{c.kind:<10} {c.name:<16} {c.plugin + ' ' + c.version:<24} {c.doc}")
    for p in presets:
        brings = f" Brings the tokenizer {p.tokenizer}." if p.tokenizer else ""
        click.echo(f"{p.kind:<10} {p.name:<16} {('preset of ' + p.use) if p.use else 'stage preset':<24} {p.doc}{brings}")
    for name, plugins in conflicts.items():
        click.echo(f"conflict   {name}: registered by {', '.join(plugins)}; choose one with [prefer] in registry.toml")
    for f in reg.failures:
        click.echo(f"failed     {f.plugin}: {f.error}")


@main.command(short_help="A component's options: types, defaults, docs.")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Which kind, if the name is in several.")
@click.pass_context
def info(ctx: click.Context, name: str, kind: str | None) -> None:
    """A component's (or preset's) options: type, default, doc."""
    reg = _registry(ctx)
    kinds = [kind] if kind else [k for k in KINDS if (k, name) in reg.components or
                                 (name in reg.presets and reg.presets[name].kind == k)]
    recipe = reg.presets.get(name)
    if not kinds and recipe is not None and recipe.kind == "recipe":
        click.echo(f"recipe {name} ({recipe.source}): {recipe.doc}")
        for key, value in recipe.values.items():
            click.echo(f"  {key} = {value!r}")
        return
    if not kinds:
        raise UnknownComponentError(f"no component or preset named {name!r}; see `modkit list`")
    for k in kinds:
        comp, preset = reg.resolve(k, name)
        click.echo(f"{comp.kind} {comp.name} ({comp.plugin} {comp.version}): {comp.doc}")
        if preset:
            click.echo(f"preset {name} sets: " + ", ".join(f"{a}={v!r}" for a, v in preset.items()))
        if k == "backbone" and name in reg.presets and reg.presets[name].tokenizer:
            click.echo(f"preset {name} brings the tokenizer {reg.presets[name].tokenizer!r} (used when the spec's "
                       "[tokenizer] names no `use` nor `from`)")
        for field, info_ in comp.options.model_fields.items():
            default = "required" if info_.is_required() else f"default {preset.get(field, info_.get_default(call_default_factory=True))!r}"
            click.echo(f"  {field}: {_type_name(info_.annotation)} ({default})")
            if info_.description:
                click.echo(f"      {info_.description}")


def _type_name(annotation) -> str:
    if getattr(annotation, "__origin__", None) is None and isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@main.command(short_help="Train a spec's stages and write the artifact.")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Artifact folder to write.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value, e.g. stages[0].steps=50.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (by default an existing OUT is an error).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--device", default=None, metavar="DEVICE",
              help="Where to train: auto, cpu, cuda, cuda:N or mps (overrides the spec's device).")
@click.option("--max-steps", type=click.IntRange(1), default=None, envvar="MODKIT_MAX_STEPS",
              help="Cap every stage at this many steps: a quick smoke run of a spec [env MODKIT_MAX_STEPS].")
@click.option("--nproc", type=click.IntRange(1), default=1,
              help="Data-parallel processes on this machine (DDP started through torchrun).")
@click.option("--strategy", type=click.Choice(["ddp", "fsdp"]), default=None,
              help="How the processes share training (overrides the spec's strategy): full copies (ddp) "
                   "or sharded weights, gradients and optimizer state (fsdp).")
@click.option("--track", multiple=True, metavar="TRACKER",
              help="Also log to this tracker (tensorboard, mlflow; see `modkit list --kind tracker`); repeatable.")
@click.pass_context
def build(ctx: click.Context, spec: str, out: str, overrides: tuple[str, ...], resume: bool, overwrite: bool,
          quiet: bool, device: str | None, max_steps: int | None, nproc: int, strategy: str | None,
          track: tuple[str, ...]) -> None:
    """Train the spec's stages, merge, export ONNX, check parity, write OUT.

    Every check that needs only the spec, its files and the backbone's shape runs before any
    training. A build that fails or is interrupted (Ctrl-C exits 130) says whether its work
    folder can be continued with --resume.
    """
    if strategy:  # validated with the spec's own key
        overrides = (*overrides, f'strategy="{strategy}"')
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from modkit.builder.preflight import check_world
        from modkit.builder.training.distributed import launch
        from modkit.spec import load_spec

        checked = [*overrides, *([f'device="{device}"'] if device else [])]
        check_world(load_spec(spec, checked, registry=_registry(ctx)), nproc)  # exit 2 before starting
        args = [*(["--registry", ctx.obj["registry_path"]] if ctx.obj["registry_path"] else []),
                *(["--debug"] if ctx.parent and ctx.parent.params.get("debug") else []),
                "build", spec, "-o", out, *(f"--set={o}" for o in overrides), *(["--resume"] if resume else []),
                *(["--overwrite"] if overwrite else []),
                *(["--quiet"] if quiet else []), *(["--device", device] if device else []),
                *(["--max-steps", str(max_steps)] if max_steps else []), *(f"--track={t}" for t in track)]
        code = launch(nproc, args)
        if code:
            raise click.ClickException(f"the data-parallel build failed (torchrun exit status {code}); "
                                       f"`--resume` continues from its last checkpoint")
        return
    from modkit.builder.build import build as run_build

    run_build(spec, out, overrides=list(overrides), resume=resume, overwrite=overwrite, registry=_registry(ctx),
              progress=not quiet, device=device, max_steps=max_steps, track=list(track))


@main.command(short_help="Redraw an artifact's training curves (OUT/curves.png).")
@click.argument("artifact", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Image to write (default OUT/curves.png).")
def plot(artifact: str, output: str | None) -> None:
    """Draw training and held-back loss and the learning rate per stage from OUT/metrics.jsonl."""
    from modkit.builder.telemetry.curves import draw_curves

    folder = Path(artifact)
    click.echo(str(draw_curves(folder / "metrics.jsonl", Path(output) if output else folder / "curves.png")))


@main.command(short_help="Run an artifact with onnxruntime, without torch.")
@click.argument("artifact", type=click.Path())
@click.option("--text", "texts", multiple=True, help="An input text (repeatable).")
@click.option("--file", "file_", type=click.Path(dir_okay=False),
              help="Inputs: a .jsonl file of records (with gold fields such as \"label\", figures are reported), "
                   "else one text per line. Without --text or --file, standard input is read the same way.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines out.")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", help="onnxruntime execution provider.")
@click.option("--precision", type=click.Choice(["fp32", "int8", "fp16"]), default="fp32", show_default=True,
              help="Which graphs to run: int8 (fp16) needs an artifact built with [export] quantize = \"int8\" "
                   "(\"fp16\", meant for --provider cuda).")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Inputs per graph call; inputs are sorted by length first, so a batch pads little.")
@click.option("--stats", is_flag=True, help="Report texts/s and tokens/s on standard error.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=None,
              help="For generating tasks; default the artifact's own setting.")
@click.option("--sample/--greedy", "do_sample", default=None,
              help="Generating tasks: sample, or decode greedily (default: sample when --temperature, "
                   "--top-k or --top-p is given).")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (default 1).")
@click.option("--top-k", type=click.IntRange(0), default=None, help="Sample among the k most likely tokens.")
@click.option("--top-p", type=float, default=None, help="Nucleus sampling: the fewest tokens reaching probability p.")
@click.option("--seed", type=int, default=None,
              help="Sampling seed of every text (the tokens torch's generate gives that text with this seed).")
@click.option("--num-beams", type=click.IntRange(1), default=None, help="Beam search with this many beams.")
@click.option("-O", "--option", "task_options", multiple=True, metavar="KEY=VALUE",
              help="Another option of the artifact's task (see `modkit info TASK --kind task`).")
@click.pass_context
def run(ctx: click.Context, artifact: str, texts: tuple[str, ...], file_: str | None, as_json: bool,
        provider: str, precision: str, batch_size: int, stats: bool, task_options: tuple[str, ...],
        **generation) -> None:
    """Run an artifact with onnxruntime (no torch), as its task's plugin serves it."""
    from modkit.runtime import Runtime

    records: list = list(texts)
    source = file_
    if file_:
        records += _read_inputs(Path(file_))
    elif not texts:
        if sys.stdin.isatty():
            raise UserError("no inputs: give --text T, --file F, or texts on standard input (one per line, "
                            "or JSON lines)")
        records += _parse_inputs(sys.stdin.read(), "<stdin>")
        source = "standard input"
    if not records:
        raise UserError(f"no inputs in {source}")
    runtime = Runtime(artifact, provider=provider, precision=precision, registry=_registry(ctx))
    started = time.perf_counter()
    options = runtime.options(**_merged_options(generation, _parse_options(task_options)))
    results = runtime.run_validated(runtime.records(records), options, batch_size=batch_size)
    seconds = time.perf_counter() - started
    task = runtime.task_impl
    for result in results:
        click.echo(json.dumps(result, ensure_ascii=False) if as_json else task.format(result))
    figures = task.score(runtime.records(records), results)
    if figures:
        click.echo(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
                   + f" ({source})", err=True)
    if stats:
        click.echo(_throughput(runtime, records, results, seconds), err=True)


@main.command(short_help="Serve an artifact over HTTP, with dynamic batching.")
@click.argument("artifact", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes, each with the artifact loaded.")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", help="onnxruntime execution provider.")
@click.option("--precision", type=click.Choice(["fp32", "int8", "fp16"]), default="fp32", show_default=True,
              help="Which graphs to serve (int8, fp16: built with [export] quantize = \"int8\", \"fp16\").")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="onnxruntime threads per worker (default: the cores shared among the workers).")
@click.option("--max-batch", type=click.IntRange(1), default=None,
              help="Inputs per graph call, gathered across requests [default: 8 on cpu, 32 on cuda].")
@click.option("--max-wait-ms", type=click.FloatRange(0), default=5.0, show_default=True,
              help="How long a request waits for others to share its batch; 0 = no dynamic batching.")
@click.option("--max-inputs", type=click.IntRange(1), default=256, show_default=True, help="Inputs per request.")
@click.option("--max-body-bytes", type=click.IntRange(1), default=1 << 20, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True,
              help="Seconds a request may take, queueing included (504 after).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              help="Of the server's log and of its JSON access log (one line a request, at info).")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Ask every request but the health probes for 'Authorization: Bearer KEY' (repeatable: any "
                   "of them); 401 without it.")
@click.option("--api-key-file", "api_key_files", multiple=True, type=click.Path(dir_okay=False),
              help="A file of API keys, one a line (repeatable); keeps them off the command line.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN call the server (repeatable; '*' for any); default none.")
@click.option("--model-name", default=None,
              help="The model's name in /v2/models/NAME and OpenAI's \"model\" (default the artifact's name).")
@click.option("--chat-template", type=click.Path(dir_okay=False), default=None,
              help="A JSON chat template for /v1/chat/completions (see docs/deploy.md); without one, chat is refused.")
@click.pass_context
def serve(ctx: click.Context, artifact: str, **settings) -> None:
    """Serve ARTIFACT over HTTP: POST /v1/run {"inputs": [...], options...} -> {"results": [...]},
    the Open Inference Protocol (/v2/...), OpenAI's /v1/completions, /v1/chat/completions,
    /v1/embeddings, /v1/models, GET /metrics, GET /v1/info, GET /healthz. See docs/deploy.md."""
    from modkit.serve import serve as run_server

    run_server(artifact, registry_path=ctx.obj["registry_path"], **settings)


def _throughput(runtime, records: list, results: list, seconds: float) -> str:
    """Texts/s, and tokens/s: tokens generated where the task generates, else tokens read."""
    if all("ids" in r for r in results):
        tokens, kind = sum(len(r["ids"]) for r in results), "generated"
    else:
        texts = [str(r.get("text", r.get("source", ""))) for r in runtime.records(records)]
        tokens, kind = sum(len(ids) for ids in runtime.tokenizer.encode_batch(texts)), "input"
    seconds = max(seconds, 1e-9)
    return (f"{len(results)} texts in {seconds:.3f} s: {len(results) / seconds:.1f} texts/s, "
            f"{tokens / seconds:.1f} {kind} tokens/s")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--stage", type=click.IntRange(0), default=0, show_default=True, help="Which stage: stages[N] of the spec.")
@click.option("-n", "count", type=click.IntRange(1), default=5, show_default=True, help="Examples per objective.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with every field.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value, as for build.")
@click.pass_context
def preview(ctx: click.Context, spec: str, stage: int, count: int, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Print the training examples a stage's objectives draw, as the build draws them."""
    from modkit.builder.preview import TEXTS, preview as run_preview

    for record in run_preview(spec, stage=stage, n=count, overrides=list(overrides), registry=_registry(ctx),
                              echo=lambda msg: click.echo(msg, err=True)):
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        click.echo(f"[{record['objective']}] step {record['step']}")
        for key in TEXTS.values():
            if key in record:
                click.echo(f"  {key:<20} {record[key]}")
        for key, value in record.items():
            if not isinstance(value, list) and key not in ("objective", "step") and key not in TEXTS.values():
                click.echo(f"  {key:<20} {value}")


def _read_inputs(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return _parse_inputs(text, str(path), jsonl=path.suffix == ".jsonl")


def _parse_inputs(text: str, source: str, jsonl: bool | None = None) -> list:
    """Lines -> texts, or JSON objects when the input is JSON lines."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if jsonl is None:  # standard input: JSON lines if the first line is an object
        jsonl = bool(lines) and lines[0][1].lstrip().startswith("{")
    if not jsonl:
        return [line for _, line in lines]
    records = []
    for n, line in lines:
        try:
            record = json.loads(line)
        except ValueError as e:
            raise UserError(f"{source}:{n}: not valid JSON ({e})") from None
        if not isinstance(record, dict):
            raise UserError(f"{source}:{n}: expected a JSON object")
        records.append(record)
    return records


def _parse_options(pairs: tuple[str, ...]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _merged_options(flags: dict, given: dict) -> dict:
    """The flags set (--temperature...) and the -O options, one set: an option may be given
    either way, once."""
    for key, value in flags.items():
        if value is None:
            continue
        if key in given and given[key] != value:
            flag = "--sample/--greedy" if key == "do_sample" else f"--{key.replace('_', '-')}"
            raise UserError(f"{key} is given twice: {flag} and -O {key}={json.dumps(given[key])}")
        given[key] = value
    return given


main.add_command(tokenize)
main.add_command(cache)
main.add_command(export_hf)
main.add_command(export_peft)

if __name__ == "__main__":
    main()
