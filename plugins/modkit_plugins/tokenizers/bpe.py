"""The ``bpe`` tokenizer plugin: options and registration (cheap to import)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modkit
from modkit import Options


ROLES = ("bos", "eos", "pad", "unk", "mask", "cls", "sep")


def default_special_tokens(style: str) -> dict[str, str]:
    """eos and pad for every style; word-end adds unk for characters unseen in training."""
    tokens = {"eos": "<|endoftext|>", "pad": "<|pad|>"}
    if style == "word-end":
        tokens["unk"] = "<|unk|>"
    return tokens


class BPEOptions(Options):
    style: Literal["word-end", "byte-level"] = Field(
        "word-end",
        description="word-end: merges over characters with '</w>' marking a word's end "
        "(original GPT, CLIP); byte-level: merges over UTF-8 bytes (GPT-2), never unknown.",
    )
    vocab_size: int = Field(8000, ge=1, description="Target vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="A pair seen fewer times is never merged.")
    pre_tokenizer: Literal["whitespace", "clip", "gpt2"] | None = Field(
        None,
        description="How text is cut into words before merging: whitespace (runs of word "
        "characters or of punctuation), clip (open_clip's regex and text cleaning, lower-cased, "
        "over bytes), gpt2 (GPT-2's regex; byte-level only). Default: whitespace for word-end, "
        "gpt2 for byte-level.",
    )
    lowercase: bool = Field(False, description="Lower-case text before pre-tokenization.")
    special_tokens: dict[str, str] | None = Field(
        None,
        description="Role -> token text (roles: bos, eos, pad, unk, mask, cls, sep). Default: "
        "eos '<|endoftext|>' and pad '<|pad|>', plus unk '<|unk|>' for word-end.",
    )

    @model_validator(mode="after")
    def _style_fits_pre_tokenizer(self):
        unknown = sorted(set(self.special_tokens or {}) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown special-token roles {unknown}; roles are {', '.join(ROLES)}")
        if self.style == "byte-level" and self.pre_tokenizer not in (None, "gpt2"):
            raise ValueError("byte-level BPE uses the gpt2 pre-tokenizer")
        if self.style == "word-end" and self.pre_tokenizer == "gpt2":
            raise ValueError("word-end BPE uses the whitespace or clip pre-tokenizer")
        return self


@modkit.hookimpl
def modkit_register_tokenizers(register):
    register(
        "bpe",
        "modkit_plugins.tokenizers.bpe_model:BPETokenizer",
        options=BPEOptions,
        doc="Byte-pair encoding: word-end (</w>, GPT/CLIP) or byte-level (GPT-2); trains and "
        "reads tokenizer.json, vocab.json+merges.txt, *.tiktoken, CLIP merges.",
    )
