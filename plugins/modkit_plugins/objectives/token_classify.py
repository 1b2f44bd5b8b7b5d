"""The `token-classify` objective (a tag per word, BERT's NER set-up) and its served task."""
from __future__ import annotations

from pydantic import Field

import modkit


class TokenClassifyOptions(modkit.Options):
    tags: list[str] = Field(min_length=2, description="The tag names, in output order (e.g. O, B-PER, I-PER).")
    tokens_field: str = Field("tokens", description="JSONL field holding the list of words.")
    tags_field: str = Field("tags", description="JSONL field holding one tag per word.")
    holdout: float = Field(0.1, ge=0, lt=1, description="Fraction of the sentences held back for evaluation.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the tags' cross-entropy (0: none).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout before the tagging head.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("token-classify", "modkit_plugins.objectives.token_classify_impl:TokenClassify",
             options=TokenClassifyOptions,
             doc="A tag per word from its first sub-token (BERT's NER); held-back accuracy and entity F1.")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("token-classify", "modkit_plugins.objectives.token_classify_task:TokenClassifyTask",
             doc="A tag per word (and the BIO entities) of a text or a list of words.")
