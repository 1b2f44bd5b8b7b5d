"""modkit-hello: registers the `words` tokenizer.

This module is what the entry point names, so it stays cheap to import: the options model
and the hook only. The implementation is named by an import path and loaded on first use.
"""
from pydantic import Field

import modkit

__version__ = "0.1.0"


class WordsOptions(modkit.Options):
    vocab_size: int = Field(5000, gt=4, description="Most frequent words kept, special tokens included.")
    lowercase: bool = Field(True, description="Lower-case text before splitting.")


@modkit.hookimpl
def modkit_register_tokenizers(register):
    register("words", "modkit_hello.words:WordTokenizer", options=WordsOptions,
             doc="Word-level tokenizer: words and punctuation, the most frequent kept.")
