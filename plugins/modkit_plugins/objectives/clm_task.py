"""Serving language-model artifacts: greedy continuation of each text (torch-free)."""
from __future__ import annotations

from modkit.interfaces import Task
from modkit.runtime import greedy, greedy_with_past, pad_ids, strip_after_eos


class GenerateTask(Task):
    graphs = ("model.onnx",)  # plus model_with_past.onnx where the build wrote it

    def run(self, records, options):
        tokenizer, art = self.artifact.tokenizer, self.artifact
        eos = art.task.get("eos_token_id")
        results = []
        for record in records:
            text = str(record["text"])
            ids = tokenizer.encode(text) or ([eos] if eos is not None else [0])
            if art.has_graph("model_with_past.onnx"):  # one cached step per token, within the positions
                limit = art.max_positions or 10**9
                steps = min(options.max_new_tokens, limit - 1)
                new, _ = greedy_with_past(art.session("model_with_past.onnx"), ids[-(limit - steps):],
                                          max_new_tokens=steps, eos_token_id=eos)
            else:  # no cached graph: run the whole window again for every token
                new = self._greedy_recompute(ids, options.max_new_tokens, eos)
            results.append({"text": text, "generated": tokenizer.decode(new), "ids": new})
        return results

    def _greedy_recompute(self, ids: list[int], max_new_tokens: int, eos: int | None) -> list[int]:
        limit, seen = self.artifact.max_positions, list(ids)

        def step(token):
            if token is not None:
                seen.append(int(token[0, 0]))
            feed, mask = pad_ids([seen[-limit:] if limit else seen], 0)
            return self.artifact.session("model.onnx").run(["logits"], {"input_ids": feed, "attention_mask": mask})[0][:, -1]

        tokens, _ = greedy(step, 1, max_new_tokens=max_new_tokens, eos_token_id=eos)
        return strip_after_eos(tokens, eos)[0]

    def format(self, result):
        return result["text"] + result["generated"]
