"""The probing report: report.json with every figure, PNGs (with matplotlib, the `analysis`
extra) and report.md that embeds them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modkit.fileio import atomic_path, atomic_write_text

HEAD_MAPS = (("entropy", "attention entropy (nats)"), ("cls", "attention to [CLS]"), ("sep", "attention to [SEP]"),
             ("punctuation", "attention to punctuation"), ("previous", "attention to previous token"),
             ("next", "attention to next token"))


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def layer_plot(plt, name: str, task: dict, path: Path) -> None:
    """Tenney et al.'s figure: mixing weights s_ℓ and differential scores Δ^(ℓ) per layer, with
    the centre of gravity and the expected layer marked."""
    weights = task["mix"]["weights"]
    layers = np.arange(len(weights))
    fig, (ax_w, ax_d) = plt.subplots(2, 1, figsize=(7, 4.6), sharex=True)
    ax_w.bar(layers, weights, color="#4c72b0")
    ax_w.axhline(1 / len(weights), color="grey", lw=0.8, ls=":", label="uniform")
    ax_w.set_ylabel("mixing weight s")
    ax_w.axvline(task["centre_of_gravity"], color="black", ls="--", zorder=3,
                 label=f"centre of gravity {task['centre_of_gravity']:.2f}")
    ax_w.set_ylim(0, max(weights) * 1.45)  # room for the legend above the bars
    ax_w.legend(loc="upper right", fontsize=8, ncol=2)
    delta = [0.0] + task["delta"]
    ax_d.bar(layers, delta, color=["#c44e52" if d >= 0 else "#8c8c8c" for d in delta])
    ax_d.axhline(0, color="black", lw=0.6)
    ax_d.set_ylabel("Δ score")
    if task["expected_layer"] is not None:
        ax_d.axvline(task["expected_layer"], color="black", ls="--", zorder=3,
                     label=f"expected layer {task['expected_layer']:.2f}")
    else:
        ax_d.plot([], [], " ", label="expected layer n/a (Σ Δ ≤ 0)")
    ax_d.legend(loc="best", fontsize=8)
    ax_d.set_xlabel("layer ℓ (0 = embeddings)")
    ax_d.set_xticks(layers)
    scores = [c["accuracy"] for c in task["cumulative"]]
    fig.suptitle(f"{name}: accuracy {scores[0]:.3f} (layer 0) → {scores[-1]:.3f} (all layers), "
                 f"majority {task['majority_baseline']:.3f}", fontsize=10)
    _save(fig, path)
    plt.close(fig)


def head_maps(plt, attention: dict, path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    for ax, (key, title) in zip(axes.ravel(), HEAD_MAPS):
        data = np.array(attention[key])
        image = ax.imshow(data, aspect="auto", cmap="viridis", origin="lower",
                          extent=(0.5, data.shape[1] + 0.5, 0.5, data.shape[0] + 0.5))
        if key == "entropy":
            title += f" (uniform ≈ {np.mean(attention['uniform_entropy']):.2f})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def relation_bars(plt, relations: dict, path: Path) -> None:
    names = list(relations)
    best = [relations[r]["best_head"]["accuracy"] for r in names]
    base = [relations[r]["baseline"]["accuracy"] for r in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 3.8))
    ax.bar(x - 0.2, best, 0.4, label="best attention head", color="#4c72b0")
    ax.bar(x + 0.2, base, 0.4, label="best fixed offset", color="#dd8452")
    for i, r in enumerate(names):
        bh = relations[r]["best_head"]
        ax.text(i - 0.2, best[i] + 0.01, f"{bh['layer']}-{bh['head']}", ha="center", fontsize=6, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r}\n(n={relations[r]['count']})" for r in names], rotation=60, fontsize=7)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def write_report(report: dict, folder: Path) -> list[Path]:
    """report.json, the PNGs where matplotlib is installed, and report.md; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    images = {}
    if plt is not None:
        for name, task in report["tasks"].items():
            images[f"layers_{name}"] = folder / f"layers_{name}.png"
            layer_plot(plt, name, task, images[f"layers_{name}"])
        images["heads"] = folder / "heads.png"
        head_maps(plt, report["attention"], images["heads"])
        if report["attention"]["relations"]:
            images["relations"] = folder / "relations.png"
            relation_bars(plt, report["attention"]["relations"], images["relations"])
    report["figures"] = {k: p.name for k, p in images.items()}
    atomic_write_text(folder / "report.json", json.dumps(report, indent=1))
    atomic_write_text(folder / "report.md", _markdown(report, images, plt is not None))
    return [folder / "report.json", folder / "report.md", *images.values()]


def _markdown(report: dict, images: dict, have_plots: bool) -> str:
    lines = [f"# Probing report: `{report['model']}`", "",
             f"{report['layers']} layers, d_model {report['d_model']}; probes: scalar mix → "
             f"{report['settings']['pooling']} span pooling → MLP, {report['settings']['epochs']} epochs.", ""]
    if not have_plots:
        lines += ["(No figures: install matplotlib, e.g. `pip install modkit[analysis]`.)", ""]
    lines += ["## Edge probing", "",
              "| task | labels | train / test | majority | layer 0 | all layers | centre of gravity | expected layer |",
              "|---|---|---|---|---|---|---|---|"]
    for name, t in report["tasks"].items():
        e = "n/a" if t["expected_layer"] is None else f"{t['expected_layer']:.2f}"
        lines.append(f"| {name} | {len(t['labels'])} | {t['train_targets']} / {t['test_targets']} | "
                     f"{t['majority_baseline']:.3f} | {t['cumulative'][0]['accuracy']:.3f} | "
                     f"{t['cumulative'][-1]['accuracy']:.3f} | {t['centre_of_gravity']:.2f} | {e} |")
    lines.append("")
    for name, t in report["tasks"].items():
        lines += [f"### {name}", "", "| layer ℓ | mixing weight s_ℓ | score of P^(ℓ) | Δ^(ℓ) |", "|---|---|---|---|"]
        for l, (w, c) in enumerate(zip(t["mix"]["weights"], t["cumulative"])):
            d = "" if l == 0 else f"{t['delta'][l - 1]:+.3f}"
            lines.append(f"| {l} | {w:.3f} | {c['accuracy']:.3f} | {d} |")
        if f"layers_{name}" in images:
            lines += ["", f"![{name}: mixing weights and Δ per layer]({images[f'layers_{name}'].name})"]
        lines.append("")
    a = report["attention"]
    lines += ["## Attention heads", "", f"Statistics over {a['sentences']} sentences.", ""]
    for key, title in HEAD_MAPS[1:]:
        m = np.array(a[key])
        layer, head = np.unravel_index(m.argmax(), m.shape)
        lines.append(f"- most {title}: layer {layer + 1} head {head + 1} ({m.max():.2f}); mean {m.mean():.2f}")
    ent = np.array(a["entropy"])
    lines.append(f"- attention entropy: mean {ent.mean():.2f} nats (uniform {np.mean(a['uniform_entropy']):.2f}), "
                 f"lowest layer {np.unravel_index(ent.argmin(), ent.shape)[0] + 1} head "
                 f"{np.unravel_index(ent.argmin(), ent.shape)[1] + 1} ({ent.min():.2f})")
    if "heads" in images:
        lines += ["", f"![attention head statistics]({images['heads'].name})"]
    if a["relations"]:
        lines += ["", "### Dependency relations", "",
                  "| relation | n | best head (layer-head, direction) | accuracy | best offset | baseline |",
                  "|---|---|---|---|---|---|"]
        for rel, r in a["relations"].items():
            b = r["best_head"]
            lines.append(f"| {rel} | {r['count']} | {b['layer']}-{b['head']} {b['direction']} | {b['accuracy']:.3f} | "
                         f"{r['baseline']['offset']:+d} | {r['baseline']['accuracy']:.3f} |")
        if "relations" in images:
            lines += ["", f"![best head per relation vs fixed offset]({images['relations'].name})"]
    return "\n".join(lines) + "\n"
