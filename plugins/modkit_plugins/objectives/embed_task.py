"""Serving `embed` artifacts: one vector per text (torch-free)."""
from __future__ import annotations

from modkit.interfaces import Task
from modkit.runtime import pad_ids

from .records import EmbedRecord


class EmbedTask(Task):
    record = EmbedRecord
    def run(self, records, options):
        art, task = self.artifact, self.artifact.task
        max_length = task.get("max_length") or art.max_positions
        texts = [str(r["text"]) for r in records]
        pad = task.get("pad_token_id", 0)  # an empty text without a template is one pad, as trained
        ids, mask = pad_ids([art.tokenizer.encode_plus(t, max_length=max_length).ids or [pad] for t in texts], pad)
        vectors = art.session("model.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return [{"text": t, "embedding": [float(x) for x in v]} for t, v in zip(texts, vectors)]

    def format(self, result):
        return " ".join(f"{x:.6f}" for x in result["embedding"]) + "\t" + result["text"]
