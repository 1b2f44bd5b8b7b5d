"""Serving `nsp` artifacts: whether ``text_pair`` follows ``text`` (torch-free)."""
from __future__ import annotations

import numpy as np

from modkit.interfaces import Task
from modkit.runtime import softmax
from modkit.tokenization import pad_batch

from .records import NextSentenceRecord


class NextSentenceTask(Task):
    record = NextSentenceRecord
    input_fields = ("text", "text_pair")

    def run(self, records, options):
        art, task = self.artifact, self.artifact.task
        max_length = task.get("max_length") or art.max_positions
        encodings = [art.tokenizer.encode_plus(str(r["text"]), str(r["text_pair"]), max_length=max_length)
                     for r in records]
        batch = pad_batch(encodings, task.get("pad_token_id", 0))
        session = art.session("model.onnx")
        feed = {i.name: batch[i.name] for i in session.get_inputs()}
        probs = softmax(session.run(["logits"], feed)[0].astype(np.float64))
        labels = task["labels"]
        return [{"text": r["text"], "text_pair": r["text_pair"], "label": labels[int(p.argmax())],
                 "probabilities": {label: round(float(q), 6) for label, q in zip(labels, p)}}
                for r, p in zip(records, probs)]

    def format(self, result):
        return f"{result['label']}\t{result['probabilities']['IsNext']:.3f}\t{result['text']} | {result['text_pair']}"

    def score(self, records, results):
        gold = [r.get("label", r.get("next_sentence_label")) for r in records]
        if any(g is None for g in gold):
            return {}
        names = ["IsNext", "NotNext"]
        right = sum((names[g] if isinstance(g, int) else str(g)) == r["label"] for g, r in zip(gold, results))
        return {"accuracy": right / len(gold), "labelled": len(gold)}
