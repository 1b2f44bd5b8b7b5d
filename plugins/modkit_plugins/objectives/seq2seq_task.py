"""Serving seq2seq artifacts: the encoder once per batch, then cached decoding (torch-free)."""
from __future__ import annotations

from modkit.interfaces import Task
from modkit.runtime import pad_ids
from modkit.runtime.decoders import CachedSeq2Seq
from modkit.runtime.generation import decode


class Seq2SeqTask(Task):
    optional_fields = ("source", "target")
    graphs = ("encoder.onnx", "decoder.onnx")

    def check(self, record):  # the source text, under the training data's name or the usual one
        return None if "source" in record or "text" in record else "missing field 'text' (or 'source')"

    def size(self, record):
        return len(str(record.get("source", record.get("text"))))

    def run(self, records, options):
        art, task = self.artifact, self.artifact.task
        eos, pad = task["eos_token_id"], task.get("pad_token_id", 0)
        limit = (task.get("max_length") or 10**9) - 1
        texts = [str(r.get("source", r.get("text"))) for r in records]
        ids, mask = pad_ids([art.tokenizer.encode(t)[:limit] + [eos] for t in texts], pad)  # as seq2seq trained
        decoder = CachedSeq2Seq(art.session("encoder.onnx"), art.session("decoder.onnx"), ids, mask,
                                task["decoder_start_token_id"])
        rows = decode(decoder, len(texts), options, eos_token_id=eos,
                      max_new_tokens=options.max_new_tokens or task.get("max_new_tokens", 32))
        return [{"text": t, "generated": art.tokenizer.decode(row), "ids": row} for t, row in zip(texts, rows)]

    def format(self, result):
        return result["generated"]

    def score(self, records, results):
        gold = [r.get("target") for r in records]
        if any(g is None for g in gold):
            return {}
        right = sum(str(g).strip() == r["generated"].strip() for g, r in zip(gold, results))
        return {"exact_match": right / len(gold), "labelled": len(gold)}
