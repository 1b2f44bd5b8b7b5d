"""`modkit probe MODEL TASK_DATA -o REPORT_DIR`."""
from __future__ import annotations

from pathlib import Path

import click

from modkit_plugins.analysis.probe_report import write_report
from modkit_plugins.analysis.probe_run import ProbeSettings, run_probe


@click.command("probe")
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("task_data", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (report.json, report.md, PNGs; cache/ keeps the activations).")
@click.option("--task", "tasks", multiple=True, help="Only this task (repeatable; default: every *.jsonl).")
@click.option("--pooling", type=click.Choice(["attention", "mean"]), default="attention", show_default=True,
              help="Span pooling: self-attentive (Tenney et al.) or the mean.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=4), default=128, show_default=True,
              help="Longest input; words past it are left out.")
@click.option("--max-targets", type=click.IntRange(min=1), default=4000, show_default=True,
              help="Training targets per task (a random sample); the test split gets a quarter as many.")
@click.option("--attention-sentences", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--min-relation-count", type=click.IntRange(min=1), default=20, show_default=True,
              help="Report dependency relations seen at least this often.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def probe(model, task_data, out, tasks, pooling, epochs, batch_size, lr, max_tokens, max_targets,
          attention_sentences, min_relation_count, seed, quiet):
    """Edge probing of every layer (scalar mix, centre of gravity, expected layer) and attention heads."""
    settings = ProbeSettings(tasks=list(tasks) or None, pooling=pooling, epochs=epochs, batch_size=batch_size,
                             lr=lr, max_tokens=max_tokens, max_targets=max_targets,
                             attention_sentences=attention_sentences, min_relation_count=min_relation_count,
                             seed=seed)
    report = run_probe(model, task_data, out, settings, progress=not quiet)
    for path in write_report(report, out):
        click.echo(str(path))
