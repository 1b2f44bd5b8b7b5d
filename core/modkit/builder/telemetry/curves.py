"""OUT/curves.png: training and held-back loss and the learning rate of every stage.

Drawn with matplotlib (the optional extra ``modkit[plot]``) from OUT/metrics.jsonl; no torch.
"""
from __future__ import annotations

import json
from pathlib import Path

from modkit.errors import UserError
from modkit.fileio import atomic_path


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def have_matplotlib() -> bool:
    return _matplotlib() is not None


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def draw_curves(metrics: Path, png: Path) -> Path:
    """Draw ``png`` from a metrics.jsonl: per stage, loss (top) and learning rate (bottom)."""
    plt = _matplotlib()
    if plt is None:
        raise UserError("drawing curves needs matplotlib: pip install 'modkit[plot]'")
    try:
        records = [json.loads(line) for line in Path(metrics).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{metrics}: no such file (an artifact built before metrics were logged?)") from None
    except ValueError as e:
        raise UserError(f"{metrics}: not JSON lines ({e})") from None
    stages = sorted({r["stage"] for r in records})
    if not stages:
        raise UserError(f"{metrics}: no records")
    fig, axes = plt.subplots(2, len(stages), figsize=(5 * len(stages), 6), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 1]})
    for col, stage in enumerate(stages):
        rows = [r for r in records if r["stage"] == stage and "loss" in r]
        evals = [r for r in records if r["stage"] == stage and "eval_loss" in r]
        loss_ax, lr_ax = axes[0][col], axes[1][col]
        steps = [r["step"] for r in rows]
        losses = [r["loss"] for r in rows]
        loss_ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8)
        loss_ax.plot(steps, _smooth(losses, max(1, len(losses) // 20)), color="tab:blue", label="training")
        if evals:
            loss_ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", color="tab:orange",
                         label="held-back")
        name = rows[0].get("objective", "") if rows else ""
        loss_ax.set_title(f"stage {stage} {name}".strip())
        loss_ax.set_ylabel("loss")
        loss_ax.legend()
        loss_ax.grid(alpha=0.3)
        lr_ax.plot(steps, [r["lr"] for r in rows], color="tab:green")
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_xlabel("step")
        lr_ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(png)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(png)
