"""The ``sentencepiece`` tokenizer plugin: options and registration (cheap to import)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modkit
from modkit import Options

#: sentencepiece's defaults; T5's presets put pad first and drop bos
DEFAULT_IDS = {"unk": 0, "bos": 1, "eos": 2, "pad": -1}
PIECES = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}


class SentencePieceOptions(Options):
    model_type: Literal["unigram", "bpe"] = Field("unigram", description="Unigram (T5, ALBERT, XLNet) or BPE.")
    vocab_size: int = Field(8000, ge=8, description="Target vocabulary size: special, byte and sentinel pieces included.")
    normalization: Literal["nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity"] = Field(
        "nmt_nfkc", description="Character normalisation: NFKC per code point (with the NMT rules: control "
        "characters dropped, other spaces made ' '; _cf also case-folds), or none.")
    add_dummy_prefix: bool = Field(True, description="Start the text with a space, so a word is the same piece "
                                   "at the start and inside.")
    remove_extra_whitespaces: bool = Field(True, description="Drop leading and trailing spaces, join runs of spaces.")
    byte_fallback: bool = Field(False, description="Write characters outside the vocabulary as <0xXX> byte pieces.")
    split_digits: bool = Field(False, description="Every digit is a piece of its own.")
    character_coverage: float = Field(0.9995, gt=0, le=1, description="Share of the text's characters that get "
                                      "pieces; the rarest others are unknown (or bytes).")
    max_piece_length: int = Field(16, ge=1, description="Longest piece, in characters.")
    user_defined_symbols: list[str] = Field(default_factory=list, description="Pieces always kept whole, in any text.")
    control_symbols: list[str] = Field(default_factory=list, description="Extra special pieces, never in text.")
    special_ids: dict[Literal["unk", "bos", "eos", "pad"], int] = Field(
        default_factory=lambda: dict(DEFAULT_IDS),
        description="Id of each special piece (-1: none): sentencepiece's unk 0, bos 1, eos 2, no pad. "
        "unk is required.")
    extra_ids: int = Field(0, ge=0, description="T5's sentinels <extra_id_0>... appended past the pieces.")
    append_eos: bool = Field(False, description="encode_plus ends each text with the eos piece (T5's '$A </s>').")

    @model_validator(mode="after")
    def _ids_fit(self):
        ids = {role: i for role, i in self.special_ids.items() if i >= 0}
        if self.special_ids.get("unk", -1) < 0:
            raise ValueError("special_ids needs an 'unk' id")
        if len(set(ids.values())) != len(ids) or sorted(ids.values()) != list(range(len(ids))):
            raise ValueError(f"special_ids {ids} must be distinct and fill 0..{len(ids) - 1}")
        if self.append_eos and "eos" not in ids:
            raise ValueError("append_eos needs an eos id")
        return self


@modkit.hookimpl
def modkit_register_tokenizers(register):
    register(
        "sentencepiece",
        "modkit_plugins.tokenizers.spm_model:SentencePieceTokenizer",
        options=SentencePieceOptions,
        doc="SentencePiece Unigram and BPE (T5, ALBERT, XLNet, LLaMA): trains, reads .model files "
        "without the sentencepiece package, and Hugging Face Unigram / byte-fallback BPE tokenizer.json.",
    )
