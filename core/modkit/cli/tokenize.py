"""``modkit tokenize``: train a tokenizer from text files, or encode text with one.

The main CLI attaches this group with ``main.add_command(tokenize)``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pydantic

from modkit.errors import UserError


@click.group()
def tokenize():
    """Train tokenizers and encode text."""


@tokenize.command()
@click.option("--kind", default="bpe", show_default=True,
              help="Tokenizer component: bpe, wordpiece, or any registered tokenizer.")
@click.option("--vocab-size", type=int, required=True, help="Target vocabulary size.")
@click.option("--min-frequency", type=int, default=None, help="Least count of a merged pair.")
@click.option("--style", default=None, help="bpe only: word-end or byte-level.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the tokenizer.json.")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def train(ctx, kind, vocab_size, min_frequency, style, output, files):
    """Learn a vocabulary from text FILES and write it as a tokenizer.json."""
    component = _registry(ctx).get("tokenizer", kind)
    values = {"vocab_size": vocab_size, "min_frequency": min_frequency, "style": style}
    values = {k: v for k, v in values.items() if v is not None}
    unknown = sorted(set(values) - set(component.options.model_fields))
    if unknown:
        raise UserError(f"tokenizer {kind!r} has no option {', '.join(unknown)}")
    try:
        options = component.options(**values)
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"--{'.'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()
        )
        raise UserError(f"invalid options for tokenizer {kind!r}: {problems}") from None
    with _Progress(f"training {kind}") as progress:
        tokenizer = component.load().train(files, options, progress=progress)
    tokenizer.save(output)
    click.echo(f"wrote {output} ({tokenizer.vocab_size} tokens)")


@tokenize.command()
@click.argument("tokenizer", type=click.Path(exists=True, path_type=Path))
@click.option("--text", default=None, help="Text to encode.")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Encode this file's contents.")
@click.option("--format", "fmt", type=click.Choice(["ids", "tokens", "json"]), default="ids",
              show_default=True, help="ids: space-separated ids; tokens: one token per line; "
              "json: ids, tokens and offsets.")
@click.option("--allow-special", is_flag=True, help="Read special-token strings as specials.")
@click.pass_context
def encode(ctx, tokenizer, text, file, fmt, allow_special):
    """Encode text with TOKENIZER (a tokenizer.json, vocab.txt, *.tiktoken, or folder)."""
    from modkit.tokenization import load_tokenizer

    if (text is None) == (file is None):
        raise UserError("give exactly one of --text and --file")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{file}: not UTF-8 text") from None
    tok = load_tokenizer(tokenizer, registry=_registry(ctx))
    if fmt == "ids":
        click.echo(" ".join(map(str, tok.encode(text, allow_special=allow_special))))
        return
    try:
        ids, offsets = tok.encode_with_offsets(text, allow_special=allow_special)
    except (NotImplementedError, UserError):  # some tokenizers cannot report offsets
        ids, offsets = tok.encode(text, allow_special=allow_special), None
    tokens = [tok.id_to_token(i) for i in ids]
    if fmt == "tokens":
        click.echo("\n".join(tokens))
    else:
        click.echo(json.dumps({"ids": ids, "tokens": tokens, "offsets": offsets}, ensure_ascii=False))


def _registry(ctx: click.Context):
    """The registry with the user's registry.toml that ``modkit --registry`` names."""
    from modkit.registry import get_registry

    return get_registry((ctx.find_root().obj or {}).get("registry_path"))


class _Progress:
    """A click progress bar fed by a tokenizer's ``progress(done, total)`` callback."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None
        self.shown = 0

    def __enter__(self):
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
