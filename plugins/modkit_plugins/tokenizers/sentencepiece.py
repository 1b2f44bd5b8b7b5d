"""The ``sentencepiece`` tokenizer plugin: options and registration (cheap to import)."""
from __future__ import annotations

import modkit
from modkit import Options


class SentencePieceOptions(Options):
    pass


@modkit.hookimpl
def modkit_register_tokenizers(register):
    register(
        "sentencepiece",
        "modkit_plugins.tokenizers.spm_model:SentencePieceTokenizer",
        options=SentencePieceOptions,
        doc="SentencePiece Unigram and BPE (T5, ALBERT, XLNet, LLaMA): reads .model files "
        "without the sentencepiece package, and Hugging Face Unigram tokenizer.json.",
    )
