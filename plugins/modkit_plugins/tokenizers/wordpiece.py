"""The ``wordpiece`` tokenizer plugin: options and registration (cheap to import)."""
from __future__ import annotations

from pydantic import Field, field_validator

import modkit
from modkit import Options

BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


class WordPieceOptions(Options):
    vocab_size: int = Field(8000, ge=1, description="Target vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="A pair seen fewer times is never merged.")
    lowercase: bool = Field(True, description="Lower-case text (BERT uncased).")
    strip_accents: bool | None = Field(
        None, description="Remove accents (NFD, then drop combining marks). Default: as lowercase.")
    handle_chinese_chars: bool = Field(True, description="Make every CJK ideograph its own word.")
    max_input_chars_per_word: int = Field(
        100, ge=1, description="A longer word becomes the unk token.")
    special_tokens: dict[str, str] = Field(
        default_factory=lambda: dict(BERT_SPECIALS),
        description="Role -> token text; ids follow this order. Default: BERT's [PAD] [UNK] "
        "[CLS] [SEP] [MASK].",
    )

    @field_validator("special_tokens")
    @classmethod
    def _known_roles_with_unk(cls, tokens: dict[str, str]) -> dict[str, str]:
        from .bpe import ROLES

        unknown = sorted(set(tokens) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown special-token roles {unknown}; roles are {', '.join(ROLES)}")
        if "unk" not in tokens:
            raise ValueError("WordPiece needs an 'unk' special token")
        return tokens


@modkit.hookimpl
def modkit_register_tokenizers(register):
    register(
        "wordpiece",
        "modkit_plugins.tokenizers.wordpiece_model:WordPieceTokenizer",
        options=WordPieceOptions,
        doc="BERT's WordPiece: basic tokenizer + greedy longest-match '##' pieces; trains and "
        "reads vocab.txt and tokenizer.json.",
    )
