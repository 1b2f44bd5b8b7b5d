"""Serving `token-classify` artifacts (torch-free): a tag per word, read at the word's first
sub-token, and the BIO entities they spell."""
from __future__ import annotations

from modkit.interfaces import Task
from modkit.runtime import pad_ids

from .tagging import entity_scores, first_subtokens, is_bio, spans
from .records import TokenClassifyRecord


class TokenClassifyTask(Task):
    record = TokenClassifyRecord
    input_fields = ("text",)
    optional_fields = ("tokens", "tags")

    def check(self, record):
        if "tokens" in record:
            words = record["tokens"]
            if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
                return "'tokens' must be a non-empty list of words"
            return None
        return None if "text" in record else "missing field 'text' (or 'tokens', a list of words)"

    def size(self, record):
        return len(record["tokens"]) if "tokens" in record else len(str(record["text"]).split())

    def run(self, records, options):
        art, task = self.artifact, self.artifact.task
        tags, limit = task["tags"], task.get("max_length") or art.max_positions
        sentences = [list(r["tokens"]) if "tokens" in r else str(r["text"]).split() for r in records]
        encoded = [art.tokenizer.encode_words(words, max_length=limit) for words in sentences]
        ids, mask = pad_ids([e.ids for e, _ in encoded], task.get("pad_token_id", 0))
        best = art.session("model.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0].argmax(-1)
        results = []
        for words, (_, word_ids), row in zip(sentences, encoded, best):
            predicted = [None] * len(words)  # words past max_length stay untagged
            for position, word in enumerate(first_subtokens(word_ids)):
                if word is not None:
                    predicted[word] = tags[int(row[position])]
            result = {"tokens": words, "tags": predicted}
            if is_bio(tags):
                result["entities"] = [{"type": kind, "start": a, "end": b, "text": " ".join(words[a:b])}
                                      for kind, a, b in sorted(spans(predicted), key=lambda s: s[1])]
            results.append(result)
        return results

    def format(self, result):
        return " ".join(f"{w}/{t}" for w, t in zip(result["tokens"], result["tags"]))

    def score(self, records, results):
        if not all("tags" in r for r in records):
            return {}
        gold, predicted = [r["tags"] for r in records], [r["tags"] for r in results]
        n = sum(len(g) for g in gold)
        figures = {"accuracy": sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p)) / n, "words": n}
        if is_bio(self.artifact.task["tags"]):
            figures.update(entity_scores(gold, predicted))
        return figures
