"""Serving `classify` artifacts (torch-free): a label and class probabilities per text or pair;
for multiple choice, the chosen index and a probability per choice."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from modkit.interfaces import Task
from modkit.runtime import softmax

from .formats import FIELDS, Layout
from .records import ClassifyRecord


class ClassifyTask(Task):
    record = ClassifyRecord
    optional_fields = ("label",)

    def __init__(self, artifact):
        super().__init__(artifact)
        self.layout = Layout.from_task(artifact.task, artifact.max_positions)
        self.input_fields = FIELDS[self.layout.format]  # pair: text + text_pair; choice: text + choices

    def check(self, record):
        problem = super().check(record)
        if problem is None and self.layout.format == "choice":
            choices = record["choices"]
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                return "'choices' must be a non-empty list of texts"
        return problem

    def size(self, record):
        return sum(len(str(record[f])) for f in self.input_fields if f in record)

    def run(self, records, options):
        if self.layout.format != "choice":
            return self._classify(records)
        by_count = defaultdict(list)  # one (B, K, T) batch per number of choices
        for i, r in enumerate(records):
            by_count[len(r["choices"])].append(i)
        results = [None] * len(records)
        for indices in by_count.values():
            for i, result in zip(indices, self._choose([records[i] for i in indices])):
                results[i] = result
        return results

    def _logits(self, records) -> np.ndarray:
        art, layout = self.artifact, self.layout
        rows = [layout.rows(art.tokenizer, str(r["text"]), r.get("text_pair") and str(r["text_pair"]),
                            r.get("choices")) for r in records]
        arrays = layout.arrays(rows, art.task.get("pad_token_id", 0))
        session = art.session("model.onnx")
        feed = {i.name: arrays[i.name] for i in session.get_inputs()}  # token_type_ids where the graph takes them
        return session.run(["logits"], feed)[0].astype(np.float64)

    def _classify(self, records):
        labels = self.artifact.task["labels"]
        out = []
        for r, p in zip(records, softmax(self._logits(records))):
            result = {f: r[f] for f in self.input_fields}
            result.update(label=labels[int(p.argmax())],
                          probabilities={label: round(float(q), 6) for label, q in zip(labels, p)})
            out.append(result)
        return out

    def _choose(self, records):
        return [{"text": r["text"], "choices": r["choices"], "label": int(p.argmax()),
                 "choice": r["choices"][int(p.argmax())], "probabilities": [round(float(q), 6) for q in p]}
                for r, p in zip(records, softmax(self._logits(records)))]

    def format(self, result):
        if "choices" in result:
            probs = " ".join(f"{q:.3f}" for q in result["probabilities"])
            return f"{result['label']}\t{probs}\t{result['text']} -> {result['choice']}"
        probs = " ".join(f"{k}={v:.3f}" for k, v in result["probabilities"].items())
        texts = " | ".join(str(result[f]) for f in self.input_fields)
        return f"{result['label']}\t{probs}\t{texts}"

    def score(self, records, results):
        gold = [r.get("label") for r in records]
        if any(g is None for g in gold):
            return {}
        if self.layout.format == "choice":  # the right choice's index, or its text
            right = sum(g == r["label"] if isinstance(g, int) else g == r["choice"] for g, r in zip(gold, results))
        else:
            right = sum(str(g) == r["label"] for g, r in zip(gold, results))
        return {"accuracy": right / len(gold), "labelled": len(gold)}
