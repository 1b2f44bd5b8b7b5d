"""Serving language-model artifacts: each text continued, in batches (torch-free)."""
from __future__ import annotations

from itertools import groupby

from modkit.interfaces import Task
from modkit.runtime.decoders import CachedLM, RecomputeLM, needs_equal_lengths
from modkit.runtime.generation import decode

from .records import GenerateRecord

CACHED = "model_with_past.onnx"
DEFAULT_NEW_TOKENS = 32


class GenerateTask(Task):
    record = GenerateRecord
    graphs = ("model.onnx",)  # plus model_with_past.onnx where the build wrote it

    def run(self, records, options):
        art, eos = self.artifact, self.artifact.task.get("eos_token_id")
        texts = [str(r["text"]) for r in records]
        # an empty text starts from the eos (the separator the model saw between documents)
        prompts, steps = self._prompts([art.tokenizer.encode(t) or [eos if eos is not None else 0] for t in texts],
                                       options)
        new = [None] * len(prompts)
        for rows in self._batches(prompts, steps):
            batch = [prompts[i] for i in rows]
            # the prompts count for n-grams and lengths, as in transformers' generate of each text alone
            for i, tokens in zip(rows, decode(self._decoder(batch), len(rows), options, max_new_tokens=steps[rows[0]],
                                              eos_token_id=eos, prefixes=batch, defaults=art.generation)):
                new[i] = tokens
        return [{"text": t, "generated": art.tokenizer.decode(ids), "ids": ids} for t, ids in zip(texts, new)]

    def _prompts(self, prompts, options):
        """The prompts cut to fit the positions, and how many tokens each may add: max_new_tokens,
        else what the artifact's max_length leaves after the prompt (as transformers' generate
        counts it), else 32."""
        limit = self.artifact.max_positions or 10**9
        longest = self.artifact.generation.get("max_length") if options.max_new_tokens is None else None
        if longest is None:
            steps = min(options.max_new_tokens or DEFAULT_NEW_TOKENS, limit - 1)
            return [p[-(limit - steps):] for p in prompts], [steps] * len(prompts)
        longest = min(longest, limit)
        prompts = [p[-(longest - 1):] for p in prompts]  # at least one new token
        return prompts, [longest - len(p) for p in prompts]

    def _batches(self, prompts, steps):
        """Rows that may add as many tokens, at once; a cached graph without position inputs
        takes one prompt length a call."""
        equal_lengths = self.artifact.has_graph(CACHED) and needs_equal_lengths(self.artifact.session(CACHED))
        key = (lambda i: (steps[i], len(prompts[i]))) if equal_lengths else (lambda i: steps[i])
        return [list(g) for _, g in groupby(sorted(range(len(prompts)), key=key), key=key)]

    def _decoder(self, prompts):
        art = self.artifact
        if art.has_graph(CACHED):  # one cached step per token
            return CachedLM(art.session(CACHED), prompts, pad_id=art.task.get("pad_token_id") or 0)
        return RecomputeLM(art.session("model.onnx"), prompts, art.max_positions)  # the whole window per token

    def format(self, result):
        return result["text"] + result["generated"]
