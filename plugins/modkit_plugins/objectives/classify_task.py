"""Serving `classify` artifacts: a label and class probabilities per text (torch-free)."""
from __future__ import annotations

import numpy as np

from modkit.interfaces import Task
from modkit.runtime import pad_ids, softmax


class ClassifyTask(Task):
    optional_fields = ("label",)

    def run(self, records, options):
        task, tokenizer = self.artifact.task, self.artifact.tokenizer
        labels, extra = task["labels"], task.get("append_ids", [])
        max_length = task.get("max_length") or self.artifact.max_positions or 10**9
        texts = [str(r["text"]) for r in records]
        if task.get("use_template"):  # as the classify objective encoded its training data
            batch = [tokenizer.encode_plus(t, max_length=max_length).ids for t in texts]
        else:
            batch = [tokenizer.encode(t)[: max_length - len(extra)] + extra for t in texts]
        ids, mask = pad_ids(batch, task.get("pad_token_id", 0))
        logits = self.artifact.session("model.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        probs = softmax(logits.astype(np.float64))
        return [{"text": t, "label": labels[int(p.argmax())],
                 "probabilities": {label: round(float(q), 6) for label, q in zip(labels, p)}}
                for t, p in zip(texts, probs)]

    def format(self, result):
        probs = " ".join(f"{k}={v:.3f}" for k, v in result["probabilities"].items())
        return f"{result['label']}\t{probs}\t{result['text']}"

    def score(self, records, results):
        gold = [r.get("label") for r in records]
        if any(g is None for g in gold):
            return {}
        right = sum(str(g) == r["label"] for g, r in zip(gold, results))
        return {"accuracy": right / len(gold), "labelled": len(gold)}
