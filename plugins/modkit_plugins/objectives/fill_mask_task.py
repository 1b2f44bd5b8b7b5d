"""Serving `mlm` artifacts: the top-k fillers of each mask token (torch-free), with the fields
of transformers' fill-mask pipeline: score, token, token_str, sequence."""
from __future__ import annotations

import numpy as np

from modkit.interfaces import Task
from modkit.runtime import pad_ids, softmax

from .records import FillMaskRecord


class FillMaskTask(Task):
    record = FillMaskRecord
    def check(self, record):
        problem = super().check(record)
        mask = self.artifact.tokenizer.id_to_token(self.artifact.task["mask_token_id"])
        if problem is None and mask not in str(record["text"]):
            problem = f"no mask token {mask!r} in the text"
        return problem

    def run(self, records, options):
        art, task = self.artifact, self.artifact.task
        mask_id, top_k = task["mask_token_id"], options.top_k or task.get("top_k", 5)
        max_length = task.get("max_length") or art.max_positions
        texts = [str(r["text"]) for r in records]
        rows = [art.tokenizer.encode_plus(t, max_length=max_length, allow_special=True).ids for t in texts]
        ids, mask = pad_ids(rows, task.get("pad_token_id", 0))
        logits = art.session("model.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        results = []
        for text, row, row_logits in zip(texts, rows, logits):
            places = [i for i, t in enumerate(row) if t == mask_id]
            fills = [self._fills(row, i, row_logits[i], top_k, single=len(places) == 1) for i in places]
            results.append({"text": text, "masks": fills})
        return results

    def _fills(self, row: list[int], place: int, logits: np.ndarray, top_k: int, single: bool) -> list[dict]:
        tokenizer = self.artifact.tokenizer
        probs = softmax(logits.astype(np.float64))
        best = np.argsort(-probs, kind="stable")[:top_k]
        out = []
        for token in best.tolist():
            filled = row[:place] + [token] + row[place + 1:]
            out.append({"score": float(probs[token]), "token": token, "token_str": tokenizer.decode([token]),
                        "sequence": tokenizer.decode(filled, skip_special_tokens=single)})
        return out

    def format(self, result):
        lines = []
        for n, fills in enumerate(result["masks"]):
            head = f"mask {n + 1}: " if len(result["masks"]) > 1 else ""
            lines += [f"{head}{f['score']:.4f}\t{f['token_str']}\t{f['sequence']}" for f in fills]
        return "\n".join(lines)
