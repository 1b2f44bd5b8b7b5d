"""Serving seq2seq artifacts: the encoder once per batch, then cached decoding (torch-free)."""
from __future__ import annotations

from modkit.interfaces import Task
from modkit.runtime import pad_ids
from modkit.runtime.decoders import CachedSeq2Seq
from modkit.runtime.generation import decode

from .sentinels import decode_with_sentinels, encode_with_sentinels
from .records import Seq2SeqRecord


class Seq2SeqTask(Task):
    record = Seq2SeqRecord
    optional_fields = ("source", "target")
    graphs = ("encoder.onnx", "decoder.onnx")

    def check(self, record):  # the source text, under the training data's name or the usual one
        return None if "source" in record or "text" in record else "missing field 'text' (or 'source')"

    def size(self, record):
        return len(str(record.get("source", record.get("text"))))

    def run(self, records, options):
        art, task = self.artifact, self.artifact.task
        eos, pad = task["eos_token_id"], task.get("pad_token_id", 0)
        positions = art.max_positions or 10**9  # learned positions bound the source and the output
        limit = min(task.get("max_length") or 10**9, positions) - 1
        texts = [str(r.get("source", r.get("text"))) for r in records]
        base = task.get("sentinel_base")  # span-corruption artifacts read and write T5's sentinels
        special = task.get("allow_special", False)  # denoise artifacts read the mask token in the text
        rows = [encode_with_sentinels(art.tokenizer, t, base, allow_special=special)[:limit] + [eos]
                for t in texts]  # as seq2seq trained
        ids, mask = pad_ids(rows, pad)
        decoder = CachedSeq2Seq(art.session("encoder.onnx"), art.session("decoder.onnx"), ids, mask,
                                task["decoder_start_token_id"])
        start = task["decoder_start_token_id"]
        longest = art.generation.get("max_length")  # a checkpoint's max_length counts the start token
        steps = options.max_new_tokens or (longest - 1 if longest else task.get("max_new_tokens", 32))
        steps = min(steps, positions)  # decoding k tokens feeds the decoder positions 0..k-1
        new = decode(decoder, len(texts), options, eos_token_id=eos, max_new_tokens=steps,
                     prefixes=[[start]] * len(texts), defaults=art.generation)
        return [{"text": t, "generated": decode_with_sentinels(art.tokenizer, row, base), "ids": row}
                for t, row in zip(texts, new)]

    def format(self, result):
        return result["generated"]

    def score(self, records, results):
        gold = [r.get("target") for r in records]
        if any(g is None for g in gold):
            return {}
        right = sum(str(g).strip() == r["generated"].strip() for g, r in zip(gold, results))
        return {"exact_match": right / len(gold), "labelled": len(gold)}
