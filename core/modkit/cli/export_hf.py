"""``modkit export-hf OUT DEST``; the main command group attaches it with ``main.add_command``."""
from __future__ import annotations

import sys

import click

from modkit.errors import UserError


@click.command("export-hf", short_help="Write an artifact as a Hugging Face folder.")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@click.pass_context
def export_hf(ctx: click.Context, out: str, dest: str) -> None:
    """Write artifact OUT as a Hugging Face folder DEST, with its task head.

    DEST gets config.json, model.safetensors and the tokenizer files, which transformers'
    from_pretrained (AutoModelFor...) loads: a classifier as *ForSequenceClassification with
    its labels, a language model as *LMHeadModel. OUT may also be a Hugging Face folder.
    """
    from modkit.builder.hf.convert import export_hf as export

    try:
        path = export(out, dest, registry=_registry(ctx), echo=lambda msg: click.echo(msg, err=True))
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(f"wrote {path}")


@click.command("export-peft", short_help="Write an artifact's PEFT methods as Hugging Face PEFT folders.")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@click.pass_context
def export_peft(ctx: click.Context, out: str, dest: str) -> None:
    """Write each PEFT method of artifact OUT as a folder DEST/<method> that peft's
    PeftModel.from_pretrained loads over the base `modkit export-hf OUT` writes.

    LoRA must be unmerged (build with `[export] merge = false`); a prefix (trained with
    positions = "peft") may be merged. A method peft cannot express (Houlsby adapters, a
    prefix without PEFT's positions) is an error that names the alternative.
    """
    from modkit.builder.hf.peft_folders import export_peft as export

    try:
        paths = export(out, dest, registry=_registry(ctx))
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    for path in paths:
        click.echo(f"wrote {path}")


def _registry(ctx: click.Context):
    """The registry with the user's registry.toml that ``modkit --registry`` names."""
    from modkit.registry import get_registry

    return get_registry((ctx.find_root().obj or {}).get("registry_path"))
