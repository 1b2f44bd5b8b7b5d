"""Trackers: where a build's figures go besides ``OUT/metrics.jsonl`` (TensorBoard, MLflow...).

A tracker is a component (kind ``tracker``, hook ``modkit_register_trackers``) chosen with
``track = ["tensorboard", "mlflow"]`` in the spec or ``modkit build --track NAME``; its module
(and the library behind it) is imported only when a build chooses it. The build calls, on the
main process only:

- :meth:`Tracker.start` once the spec is checked, with the resolved spec flattened into
  parameters (``stages.0.lr``...);
- :meth:`Tracker.log` with every line ``metrics.jsonl`` gets, as numbers, at a step that
  runs on across stages (stage 2's step 1 follows stage 1's last);
- :meth:`Tracker.finish` at the end, with the manifest and the artifact folder (None when the
  build failed).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modkit.errors import UserError
from modkit.options import Options

#: metrics.jsonl keys that place a line rather than measure something
PLACING = ("stage", "objective", "step")


class Tracker:
    """One tracker for one build. ``base`` is the spec's folder (relative paths start there)
    and ``name`` the spec's name."""

    def __init__(self, options: Options, base: Path, name: str):
        self.options = options
        self.base = Path(base)
        self.name = name

    def start(self, params: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
        """Open the run; return what the manifest records of it (where it is: a folder, a run id)."""
        raise NotImplementedError

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, manifest: dict[str, Any] | None, artifact: Path | None) -> None:
        """Close the run: ``artifact`` is the finished artifact folder, or None if the build failed."""
        raise NotImplementedError


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """``{"stages": [{"lr": 0.1}]}`` -> ``{"stages.0.lr": "0.1"}``: what trackers take as parameters."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        items = enumerate(value)
    else:
        return {prefix: value if isinstance(value, str) else json.dumps(value)}
    out: dict[str, str] = {}
    for key, inner in items:
        out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out


class Trackers:
    """The build's trackers by component name, fed together a metrics.jsonl line at a time.
    ``stage_steps``: each stage's steps, so stage k's step s is logged at the steps of the
    stages before plus s (the same on a resumed build)."""

    def __init__(self, trackers: dict[str, Tracker], stage_steps: list[int] = ()):
        self.trackers = trackers
        self.stage_steps = list(stage_steps)

    def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Open every tracker's run. One that cannot (a tracking server not there, a bad URI) is
        the user's error naming the tracker, before any training; the runs opened before it are
        closed as failed."""
        params, opened = flatten(spec), {}
        for name, tracker in self.trackers.items():
            try:
                opened[name] = tracker.start(params, spec)
            except Exception as e:
                for started in list(opened):
                    self.trackers[started].finish(None, None)
                raise UserError(f"track: {name!r} could not start its run: {type(e).__name__}: {e}") from e
        return opened

    def line(self, record: dict[str, Any]) -> None:
        """A metrics.jsonl line: its numbers, at a step running on across stages."""
        step = sum(self.stage_steps[: int(record["stage"]) - 1]) + int(record["step"])
        numbers = {k: float(v) for k, v in record.items()
                   if k not in PLACING and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers.values():
            tracker.log(numbers, step)

    def finish(self, manifest: dict[str, Any] | None, artifact: Path | None) -> None:
        for tracker in self.trackers.values():
            tracker.finish(manifest, artifact)


__all__ = ["Tracker", "Trackers", "flatten"]
