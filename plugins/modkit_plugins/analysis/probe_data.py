"""Annotated text -> edge-probing tasks (jiant's JSON-lines format), for `modkit probe`.

A task file holds one sentence per line: ``{"text": "w1 w2 ...", "targets": [{"span1": [i, j],
"span2": [k, l], "label": "..."}]}`` with spans as [start, end) word indices (span2 only
for two-span tasks). Readers:

- CoNLL-U (Universal Dependencies): ``pos`` (UPOS of each word), ``xpos`` (where given),
  ``deps`` (dependent span, head span, relation) and ``trees.jsonl`` (words, heads,
  relations) for the attention-head analysis;
- word/TAG lines (NLTK's and Pattern's tagged corpora): ``pos``, cut into sentences at
  words tagged ``.``;
- ``"label","text"`` CSV rows: a sentence-level task whose one span covers the sentence.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from modkit.errors import UserError
from modkit.fileio import atomic_write_text


def read_conllu(path: Path) -> list[dict]:
    """Sentences as {"words", "upos", "xpos", "heads" (1-based, 0 = root), "deprels"}."""
    sentences, rows = [], []

    def flush(lineno: int) -> None:
        if rows:
            ids = [r[0] for r in rows]
            if ids != list(range(1, len(ids) + 1)):
                raise UserError(f"{path}:{lineno}: word ids of the sentence are not 1..n")
            sentences.append({"words": [r[1] for r in rows], "upos": [r[2] for r in rows],
                              "xpos": [r[3] for r in rows], "heads": [r[4] for r in rows],
                              "deprels": [r[5] for r in rows]})
            rows.clear()

    lineno = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                flush(lineno)
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise UserError(f"{path}:{lineno}: expected 10 tab-separated CoNLL-U columns, got {len(cols)}")
            if "-" in cols[0] or "." in cols[0]:
                continue  # multi-word tokens and empty nodes: the words themselves follow
            try:
                rows.append((int(cols[0]), cols[1], cols[3], cols[4], int(cols[6]), cols[7]))
            except ValueError:
                raise UserError(f"{path}:{lineno}: ID and HEAD must be integers") from None
        flush(lineno)
    return sentences


def conllu_tasks(sentences: list[dict]) -> dict[str, list[dict]]:
    tasks: dict[str, list[dict]] = {"pos": [], "deps": [], "trees": []}
    has_xpos = any(x != "_" for s in sentences for x in s["xpos"])
    if has_xpos:
        tasks["xpos"] = []
    for s in sentences:
        text = " ".join(s["words"])
        tasks["pos"].append({"text": text, "targets": [{"span1": [i, i + 1], "label": t}
                                                       for i, t in enumerate(s["upos"])]})
        if has_xpos:
            tasks["xpos"].append({"text": text, "targets": [{"span1": [i, i + 1], "label": t}
                                                            for i, t in enumerate(s["xpos"]) if t != "_"]})
        tasks["deps"].append({"text": text, "targets": [
            {"span1": [i, i + 1], "span2": [h - 1, h], "label": rel}
            for i, (h, rel) in enumerate(zip(s["heads"], s["deprels"])) if h > 0]})
        tasks["trees"].append({"words": s["words"], "heads": s["heads"], "deprels": s["deprels"]})
    return tasks


def read_tagged(path: Path) -> list[tuple[list[str], list[str]]]:
    """``word/TAG`` lines; a sentence ends after a word tagged ``.``."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            for item in line.split():
                word, sep, tag = item.rpartition("/")
                if not sep or not word or not tag:
                    raise UserError(f"{path}:{lineno}: {item!r} is not word/TAG")
                words.append(word)
                tags.append(tag)
                if tag == ".":
                    sentences.append((words, tags))
                    words, tags = [], []
    if words:
        sentences.append((words, tags))
    return sentences


def tagged_tasks(sentences) -> dict[str, list[dict]]:
    return {"pos": [{"text": " ".join(w), "targets": [{"span1": [i, i + 1], "label": t} for i, t in enumerate(tags)]}
                    for w, tags in sentences]}


def csv_task(path: Path, name: str) -> dict[str, list[dict]]:
    """``"label","text"`` rows -> one sentence-level span per row."""
    out = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if len(row) < 2:
                raise UserError(f"{path}:{lineno}: expected \"label\",\"text\"")
            words = row[1].split()
            if words:
                out.append({"text": " ".join(words), "targets": [{"span1": [0, len(words)], "label": row[0].strip()}]})
    return {name: out}


def _format(path: Path, given: str) -> str:
    if given != "auto":
        return given
    suffix = path.suffix.lower()
    return {".conllu": "conllu", ".conll": "conllu", ".csv": "csv"}.get(suffix, "tagged")


@click.command("probe-data")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the task files into (files of the same name are replaced).")
@click.option("--format", "fmt", type=click.Choice(["auto", "conllu", "tagged", "csv"]), default="auto",
              show_default=True, help="auto: by suffix (.conllu, .csv; anything else is word/TAG).")
@click.option("--name", default=None, help="Task name for a CSV source (default: the file's stem).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Keep the first N sentences.")
def probe_data(source: Path, out: Path, fmt: str, name: str | None, limit: int | None) -> None:
    """Convert annotated text (CoNLL-U, word/TAG, "label","text" CSV) into probing tasks."""
    fmt = _format(source, fmt)
    if fmt == "conllu":
        sentences = read_conllu(source)[:limit]
        tasks = conllu_tasks(sentences)
    elif fmt == "tagged":
        tasks = tagged_tasks(read_tagged(source)[:limit])
    else:
        tasks = {k: v[:limit] for k, v in csv_task(source, name or source.stem).items()}
    if not any(tasks.values()):
        raise UserError(f"{source}: no sentences found")
    out.mkdir(parents=True, exist_ok=True)
    for task, rows in tasks.items():
        atomic_write_text(out / f"{task}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        targets = sum(len(r.get("targets", [])) for r in rows)
        click.echo(f"{out / (task + '.jsonl')}: {len(rows)} sentences" + (f", {targets} targets" if targets else ""))
