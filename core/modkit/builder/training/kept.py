"""``keep_checkpoints = k``: weight snapshots at evaluations, the last k and the best kept.

Snapshots are the model's weights as it trains (PEFT modules not merged), saved from CPU
copies as safetensors in the work folder and copied into ``OUT/checkpoints/`` with the
artifact. "Best" is the lowest ``eval_loss`` so far (an objective without held-back batches
has no eval_loss: then only the last k are kept).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from modkit.builder.training.device import cpu_state
from modkit.fileio import atomic_path, atomic_write_text


class KeptCheckpoints:
    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep
        self.index = folder / "kept.json"
        self.records: list[dict[str, Any]] = json.loads(self.index.read_text()) if self.index.exists() else []

    def rewind(self, stage: int, step: int) -> None:
        """Forget snapshots after (stage, step), which a resumed build takes again."""
        for r in [r for r in self.records if (r["stage"], r["step"]) > (stage, step)]:
            (self.folder / r["file"]).unlink(missing_ok=True)
            self.records.remove(r)

    def add(self, model, stage: int, step: int, figures: dict[str, float]) -> None:
        name = f"stage{stage}-step{step:06d}.safetensors"
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / name) as tmp:
            save_file(cpu_state(model), str(tmp))
        self.records = [r for r in self.records if r["file"] != name]
        self.records.append({"file": name, "stage": stage, "step": step, "eval_loss": figures.get("eval_loss")})
        self._prune(stage)
        atomic_write_text(self.index, json.dumps(self.records))

    def best(self, stage: int) -> dict[str, Any] | None:
        """The stage's snapshot with the lowest eval_loss (losses of other stages' objectives
        do not compare)."""
        scored = [r for r in self.records if r["stage"] == stage and r["eval_loss"] is not None]
        return min(scored, key=lambda r: r["eval_loss"]) if scored else None

    def _prune(self, stage: int) -> None:
        mine = [r for r in self.records if r["stage"] == stage]
        keep = mine[-self.keep:]
        best = self.best(stage)
        if best is not None and best not in keep:
            keep = [best, *keep]
        for r in mine:
            if r not in keep:
                (self.folder / r["file"]).unlink(missing_ok=True)
        self.records = [r for r in self.records if r["stage"] != stage] + keep

    def manifest(self) -> list[dict[str, Any]]:
        return [{**r, "file": f"checkpoints/{r['file']}", "best": r is self.best(r["stage"])} for r in self.records]
