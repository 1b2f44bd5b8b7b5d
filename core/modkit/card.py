"""The model card: README.md in Hugging Face's format, written from an artifact's manifest.

Every artifact gets one, and so does every ``modkit export-hf`` folder. The YAML front matter
holds what the Hub indexes (``library_name``, ``pipeline_tag``, ``base_model``, ``datasets``,
``metrics``, ``tags``); the body the spec as resolved, each data file's sha256, the held-back
figures, the ONNX parity and what the build cost. Written from the manifest alone (a dict),
so an artifact's card can be rewritten at any time; torch-free.
"""
from __future__ import annotations

import json
from typing import Any

#: a modkit task -> the Hub's pipeline tag
PIPELINE_TAGS = {
    "generate": "text-generation", "classify": "text-classification", "seq2seq": "text2text-generation",
    "fill-mask": "fill-mask", "token-classify": "token-classification", "embed": "sentence-similarity",
    "next-sentence": "text-classification",
}


def model_card(manifest: dict[str, Any], *, library: str = "modkit") -> str:
    """README.md for the artifact ``manifest`` describes; ``library`` is what reads the folder
    (``"modkit"`` for an artifact, ``"transformers"`` for an ``export-hf`` folder)."""
    task = (manifest.get("task") or {}).get("task")
    stages = manifest.get("stages") or []
    final = {k: v for k, v in (stages[-1].get("eval") or {}).items() if _number(v)} if stages else {}
    front: dict[str, Any] = {"library_name": library}
    if task in PIPELINE_TAGS:
        front["pipeline_tag"] = PIPELINE_TAGS[task]
    bases = [c["hub"]["repo_id"] for c in _components(manifest) if isinstance(c.get("hub"), dict)]
    if bases:
        front["base_model"] = bases[0]
    files = [name for s in stages for key in ("data", "eval_data") for name in _datasets(s.get(key) or {})]
    if files:
        front["datasets"] = list(dict.fromkeys(files))
    if final:
        front["metrics"] = sorted(final)
    front["tags"] = list(dict.fromkeys(["modkit", *([task] if task else []), *_objectives(manifest),
                                        *(["onnx"] if manifest.get("graphs") else [])]))
    return "---\n" + "".join(f"{k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in front.items()) + "---\n\n" \
        + "\n".join(_body(manifest, task, stages, final, library)) + "\n"


def _body(manifest, task, stages, final, library) -> list[str]:
    name = manifest.get("name", "model")
    kind = PIPELINE_TAGS.get(task, task or "transformer")
    out = [f"# {name}", "", f"A {kind} model built with modkit {manifest.get('modkit_version', '')} "
           f"from the spec below (seed {manifest.get('seed')})." + (
               " This folder is its Hugging Face export (`modkit export-hf`)." if library != "modkit" else ""), ""]
    out += _usage(task, library)
    comps = manifest.get("components") or {}
    out += ["## Components", "", "| part | component | from |", "|---|---|---|"]
    for part in ("tokenizer", "backbone"):
        c = comps.get(part) or {}
        out.append(f"| {part} | {c.get('name', '')} ({c.get('plugin', '')} {c.get('version', '')}) | "
                   f"{_where(c)} |")
    out += ["", "## Training", "", "| stage | objective | PEFT | steps | data | rows (skipped) | loss first → last 10 |",
            "|---|---|---|---|---|---|---|"]
    for i, s in enumerate(stages, 1):
        data = s.get("data") or {}
        loss = " → ".join(f"{v:.4f}" for v in (s.get("loss_first_10"), s.get("loss_last_10")) if _number(v))
        out.append(f"| {i} | {s.get('objective', '')} | {', '.join(s.get('peft') or []) or '—'} | {s.get('steps', '')} | "
                   f"{data.get('source', '')} | {_rows(data)} | {loss} |")
    hashes = [(i, key, f, h) for i, s in enumerate(stages, 1) for key in ("data", "eval_data")
              for f, h in ((s.get(key) or {}).get("files") or {}).items()]
    if hashes:
        out += ["", "### Data", "", "| stage | key | file | sha256 |", "|---|---|---|---|"]
        out += [f"| {i} | {key} | {f} | `{h}` |" for i, key, f, h in hashes]
    if final:
        out += ["", "## Held-back figures", "", "| figure | value |", "|---|---|"]
        out += [f"| {k} | {v:.6g} |" for k, v in sorted(final.items())]
    parity = manifest.get("parity") or {}
    if parity:
        out += ["", "## ONNX parity", "", "Largest absolute difference of the exported graphs' outputs from torch's:", "",
                "| check | value |", "|---|---|"]
        out += [f"| {k} | {v:.3g} |" if _number(v) else f"| {k} | {v} |" for k, v in parity.items()
                if _number(v) or isinstance(v, str)]
    out += _cost(manifest)
    out += ["", "## Spec (resolved)", "", "```json", json.dumps(manifest.get("spec", {}), indent=2), "```"]
    return out


def _usage(task: str | None, library: str) -> list[str]:
    if library == "modkit":
        return ["## Use", "", "```sh", 'modkit run path/to/this/folder --text "..."', "modkit serve path/to/this/folder", "```", ""]
    if task in PIPELINE_TAGS:
        return ["## Use", "", "```python", "from transformers import pipeline", "",
                f'pipe = pipeline("{PIPELINE_TAGS[task]}", model="path/to/this/folder")', "```", ""]
    return []


def _cost(manifest) -> list[str]:
    res = manifest.get("resources") or {}
    rows = [("build time", f"{manifest['build_seconds']} s")] if _number(manifest.get("build_seconds")) else []
    if _number(res.get("cpu_seconds")):
        rows.append(("CPU time", f"{res['cpu_seconds']} s on {res.get('cpu_count')} CPUs, {res.get('gpu_count', 0)} GPUs"))
    if _number(res.get("energy_kwh")):
        rows.append(("energy", f"{res['energy_kwh']:.6g} kWh (measured: {res.get('energy_source')})"))
    if not rows:
        return []
    return ["", "## Cost and energy", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _datasets(record: dict[str, Any]) -> list[str]:
    """A stage's data as the Hub names datasets: its repository, else its files."""
    hub = record.get("hub")
    return [hub["repo_id"]] if isinstance(hub, dict) else list(record.get("files", {}))


def _components(manifest) -> list[dict[str, Any]]:
    comps = manifest.get("components") or {}
    return [c for c in (comps.get("backbone"), comps.get("tokenizer")) if isinstance(c, dict)]


def _objectives(manifest) -> list[str]:
    return [s["objective"] for s in manifest.get("stages") or [] if isinstance(s.get("objective"), str)]


def _where(component: dict[str, Any]) -> str:
    hub = component.get("hub")
    if isinstance(hub, dict):
        return f"{hub['repo_id']} @ {hub['revision']}"
    return str(component.get("from", "trained by this build"))


def _rows(data: dict[str, Any]) -> str:
    """Rows read (and skipped); a file read as it is was not counted."""
    if "rows" not in data:
        return "—"
    return f"{data['rows']} ({data.get('skipped', 0)})"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["model_card", "PIPELINE_TAGS"]
