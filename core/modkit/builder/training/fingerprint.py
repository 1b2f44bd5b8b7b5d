"""What a build's training depends on, so that ``--resume`` continues only the build it started.

The fingerprint is the resolved spec (every component's full options) without the keys that
may change between an interrupted run and its resume because they do not change what is
trained, plus the sha256 of every file training reads. The work folder keeps it next to its
checkpoint (``fingerprint.json``); a resume compares it with the spec and data it is given and
refuses, as a spec error naming each change, to continue from weights trained on others.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modkit.errors import SpecError
from modkit.fileio import atomic_write_text, data_sha256
from modkit.spec import Spec

FILE = "fingerprint.json"
#: where the run happens, where its figures are reported and what is written at its end, not
#: what it trains: free to change on resume
_FREE = ("name", "device", "compile", "export", "track")
#: recomputing activations in the backward pass gives the same gradients (dropout's masks too)
_FREE_IN_STAGE = ("checkpoint_every", "activation_checkpointing")


def fingerprint(spec: Spec) -> dict[str, Any]:
    """The spec and data contents a build's checkpoints are trained from."""
    resolved = spec.resolved_dict()
    for key in _FREE:
        resolved.pop(key, None)
    for stage in resolved["stages"]:
        for key in _FREE_IN_STAGE:
            stage.pop(key, None)
    sources = [] if spec.model.tokenizer.from_ else list(spec.train_on)
    sources += [res for stage in spec.sources for res in stage.values() if res is not None]
    base = spec.source.parent
    data = {}
    for res in sources:  # every file a source reads (its globs expanded), by the spec key that names it
        for f in res.component.load()(res.options, base).files():
            data[f"{res.section}={_shown(f, base)}"] = data_sha256(f)
    return {"spec": resolved, "data": data}


def _shown(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def save(work: Path, spec: Spec) -> None:
    atomic_write_text(work / FILE, json.dumps(fingerprint(spec), indent=1))


def check(work: Path, spec: Spec) -> None:
    """Raise :class:`SpecError` naming every way ``spec`` and its data differ from those the
    checkpoint in ``work`` was trained with."""
    path = work / FILE
    if not path.exists():
        raise SpecError(str(spec.source), [("", f"{work} holds a checkpoint without a fingerprint (written by an "
                                                "older modkit), so --resume cannot check it was trained with this "
                                                "spec and data; build again without --resume")])
    then, now = json.loads(path.read_text(encoding="utf-8")), fingerprint(spec)
    problems = [(key, f"{old!r} -> {new!r}") for key, old, new in _changes(then["spec"], now["spec"])]
    for entry in sorted(set(then["data"]) | set(now["data"])):
        if then["data"].get(entry) != now["data"].get(entry):
            key, _, name = entry.partition("=")
            problems.append((key, f"data file {name} changed since the checkpoint was written"
                             if entry in then["data"] and entry in now["data"] else
                             f"{name}: not among the files the checkpoint was trained on"
                             if entry in now["data"] else f"{name} is no longer read"))
    if problems:
        problems.append(("", f"--resume continues a build only with the spec and data it started with (the "
                             f"checkpoint in {work}); undo the change, or build again without --resume"))
        raise SpecError(str(spec.source), problems)


def _changes(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(key path, old, new)`` of every leaf where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in sorted(set(old) | set(new), key=str)
                for change in _changes(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [change for n, (a, b) in enumerate(zip(old, new)) for change in _changes(a, b, f"{path}[{n}]")]
    return [] if old == new else [(path, old, new)]
