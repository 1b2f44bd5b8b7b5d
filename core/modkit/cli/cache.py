"""``modkit cache``: what $MODKIT_CACHE holds, and clearing it."""
from __future__ import annotations

import json

import click

from modkit.cache import PARTS, clear, entries, human
from modkit.fileio import cache_folder


@click.group(invoke_without_command=True, short_help="What $MODKIT_CACHE holds (token files, converted data); clear it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.pass_context
def cache(ctx: click.Context, as_json: bool) -> None:
    """Show each part of the cache (default ~/.cache/modkit, or $MODKIT_CACHE): files and size.
    Everything in it is made again when a build needs it."""
    if ctx.invoked_subcommand is not None:
        return
    found = entries()
    rows = {part: {"files": sum(e.part == part for e in found), "bytes": sum(e.size for e in found if e.part == part),
                   "holds": holds} for part, holds in PARTS.items()}
    if as_json:
        click.echo(json.dumps({"folder": str(cache_folder()), "parts": rows}, indent=1))
        return
    click.echo(f"{cache_folder()}")
    for part, row in rows.items():
        files = f"{row['files']} file" + ("" if row["files"] == 1 else "s")
        click.echo(f"  {part:<18} {files:>12} {human(row['bytes']):>10}   {row['holds']}")


@cache.command("clear", short_help="Remove cached files (all, or some parts, or the unused ones).")
@click.argument("parts", nargs=-1, type=click.Choice(list(PARTS)))
@click.option("--older-than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Only files not written for DAYS days (a file's time is when it was made).")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
def clear_command(parts: tuple[str, ...], older_than: float | None, dry_run: bool) -> None:
    """Remove the files of PARTS (default: every part)."""
    gone = clear(parts=parts, older_than_days=older_than, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(gone)} file{'' if len(gone) == 1 else 's'}, {human(sum(e.size for e in gone))}")
