"""Serving language-model artifacts: each text continued, in batches (torch-free)."""
from __future__ import annotations

from itertools import groupby

from modkit.interfaces import Task
from modkit.runtime.decoders import CachedLM, RecomputeLM, needs_equal_lengths
from modkit.runtime.generation import decode

CACHED = "model_with_past.onnx"


class GenerateTask(Task):
    graphs = ("model.onnx",)  # plus model_with_past.onnx where the build wrote it

    def run(self, records, options):
        art, eos = self.artifact, self.artifact.task.get("eos_token_id")
        limit = art.max_positions or 10**9
        steps = min(options.max_new_tokens, limit - 1)
        texts = [str(r["text"]) for r in records]
        # an empty text starts from the eos (the separator the model saw between documents)
        prompts = [(art.tokenizer.encode(t) or [eos if eos is not None else 0])[-(limit - steps):] for t in texts]
        new = [None] * len(prompts)
        for rows in self._batches(prompts):
            batch = [prompts[i] for i in rows]
            # the prompts count for n-grams and lengths, as in transformers' generate of each text alone
            for i, tokens in zip(rows, decode(self._decoder(batch), len(rows), options, max_new_tokens=steps,
                                              eos_token_id=eos, prefixes=batch, defaults=art.generation)):
                new[i] = tokens
        return [{"text": t, "generated": art.tokenizer.decode(ids), "ids": ids} for t, ids in zip(texts, new)]

    def _batches(self, prompts):
        """All rows at once; a cached graph without position inputs takes one prompt length a call."""
        rows = list(range(len(prompts)))
        if not (self.artifact.has_graph(CACHED) and needs_equal_lengths(self.artifact.session(CACHED))):
            return [rows]
        by_length = sorted(rows, key=lambda i: len(prompts[i]))
        return [list(g) for _, g in groupby(by_length, key=lambda i: len(prompts[i]))]

    def _decoder(self, prompts):
        art = self.artifact
        if art.has_graph(CACHED):  # one cached step per token
            return CachedLM(art.session(CACHED), prompts, pad_id=art.task.get("pad_token_id") or 0)
        return RecomputeLM(art.session("model.onnx"), prompts, art.max_positions)  # the whole window per token

    def format(self, result):
        return result["text"] + result["generated"]
