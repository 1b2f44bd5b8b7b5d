"""Serving `regress` artifacts without torch: texts -> model.onnx -> one number each."""
from __future__ import annotations

from modkit.interfaces import Task
from modkit.runtime import pad_ids


class RegressTask(Task):
    def __init__(self, artifact):
        super().__init__(artifact)
        self.optional_fields = (artifact.task.get("value_field", "value"),)  # the gold number score reads

    def run(self, records, options):
        task = self.artifact.task
        append, limit = task["append_ids"], task.get("max_length") or 10**9
        texts = [str(r["text"]) for r in records]
        ids, mask = pad_ids([self.artifact.tokenizer.encode(t)[: limit - len(append)] + append for t in texts],
                            task["pad_token_id"])
        values = self.artifact.session("model.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return [{"text": t, "value": float(v)} for t, v in zip(texts, values)]

    def format(self, result):
        return f"{result['value']:.4g}\t{result['text']}"

    def score(self, records, results):
        field = self.artifact.task.get("value_field", "value")
        gold = [r.get(field) for r in records]
        if any(g is None for g in gold):
            return {}
        errors = [float(g) - r["value"] for g, r in zip(gold, results)]
        return {"mse": sum(e * e for e in errors) / len(errors), "mae": sum(abs(e) for e in errors) / len(errors),
                "labelled": len(errors)}
