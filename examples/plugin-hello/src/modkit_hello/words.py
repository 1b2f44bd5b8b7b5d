"""A word-level tokenizer written against modkit's Tokenizer interface.

It saves itself as a Hugging Face WordLevel tokenizer.json, so `tokenizers` can load it too.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from modkit import ArtifactError, Tokenizer

WORD = re.compile(r"\w+|[^\w\s]")
SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}


class WordTokenizer(Tokenizer):
    def __init__(self, vocab: dict[str, int], lowercase: bool = True):
        self.vocab = vocab
        self.inverse = {i: w for w, i in vocab.items()}
        self.lowercase = lowercase
        self.special_tokens = dict(SPECIALS)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, files, options, progress=None):
        counts: Counter[str] = Counter()
        for n, f in enumerate(files, 1):
            text = Path(f).read_text(encoding="utf-8")
            counts.update(WORD.findall(text.lower() if options.lowercase else text))
            if progress:
                progress(n, len(files))
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]  # ties: alphabetical
        vocab = {tok: i for i, tok in enumerate(SPECIALS.values())}
        for w in words[: options.vocab_size - len(vocab)]:
            vocab[w] = len(vocab)
        return cls(vocab, options.lowercase)

    def encode(self, text, *, allow_special=False):
        unk = self.vocab["<unk>"]
        specials = set(SPECIALS.values()) if allow_special else set()
        pieces = re.findall(r"<pad>|<unk>|<s>|</s>|\w+|[^\w\s]", text) if allow_special else WORD.findall(text)
        return [self.vocab[p] if p in specials else self.vocab.get(p.lower() if self.lowercase else p, unk)
                for p in pieces]

    def decode(self, ids, *, skip_special_tokens=False):
        specials = set(SPECIALS.values())
        words = [self.inverse.get(i, "<unk>") for i in ids]
        return " ".join(w for w in words if not (skip_special_tokens and w in specials))

    def token_to_id(self, token):
        return self.vocab.get(token)

    def id_to_token(self, id):
        return self.inverse.get(id)

    def to_json(self):
        return {
            "version": "1.0",
            "added_tokens": [{"id": self.vocab[t], "content": t, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True} for t in SPECIALS.values()],
            "normalizer": {"type": "Lowercase"} if self.lowercase else None,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": self.vocab, "unk_token": "<unk>"},
        }

    @classmethod
    def from_file(cls, path):
        path = Path(path)
        if path.suffix != ".json":
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ArtifactError(f"{path}: not valid JSON ({e})") from None
        model = doc.get("model") if isinstance(doc, dict) else None
        if not isinstance(model, dict) or model.get("type") != "WordLevel":
            return None  # not ours: let another tokenizer try
        return cls(model["vocab"], lowercase=(doc.get("normalizer") or {}).get("type") == "Lowercase")
