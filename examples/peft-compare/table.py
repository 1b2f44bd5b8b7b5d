"""Print the comparison table of peft-compare artifacts: `python table.py OUT...`.

Held-back accuracy is what the build measured on the rows it held back; test accuracy and
latency come from onnxruntime (no torch) on data/test.jsonl of the minilm-lora example.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from modkit.runtime import Runtime
from modkit.runtime.artifact import read_manifest

TEST = Path(__file__).resolve().parent.parent / "minilm-lora" / "data" / "test.jsonl"


def row(out: Path) -> str:
    m = read_manifest(out)
    stage = m["stages"][-1]
    methods = " + ".join(stage["peft"]) or "full fine-tuning"
    fraction = stage["trainable_parameters"] / stage["total_parameters"]
    own = ", ".join(f"{f['name']} {100 * f['fraction']:.2f} %" for f in stage.get("peft_parameters", []))
    rows = [json.loads(line) for line in TEST.read_text().splitlines()]
    runtime = Runtime(out)
    predicted = [r["label"] for r in runtime.run([r["text"] for r in rows])]
    test_acc = sum(p == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    latencies = []
    for r in rows[:50]:  # one text at a time, as a service answers one request
        start = time.perf_counter()
        runtime.run([r["text"]])
        latencies.append(1000 * (time.perf_counter() - start))
    return (f"| {methods} | {stage['eval']['heldout_accuracy']:.3f} | {test_acc:.3f} | {100 * fraction:.2f} %"
            f"{f' ({own})' if own else ''} | {m['build_seconds']:.0f} s | {statistics.median(latencies):.1f} ms |")


if __name__ == "__main__":
    print("| method | held-back accuracy | test accuracy (ONNX) | trainable (head included) | build | ONNX latency, batch 1 (median) |")
    print("|---|---|---|---|---|---|")
    for out in sys.argv[1:]:
        print(row(Path(out)))
