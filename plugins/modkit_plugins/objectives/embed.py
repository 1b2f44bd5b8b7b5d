"""The `embed` objective (sentence embeddings, as sentence-transformers makes them) and the
`embed` task that serves them as vectors."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

import modkit


class EmbedOptions(modkit.Options):
    pooling: Literal["mean", "cls"] = Field("mean", description="Mean of the real tokens' states, or the first ([CLS]) state.")
    normalize: bool = Field(True, description="Scale each embedding to unit length (L2).")
    text_field: str = Field("text", description="JSONL field holding the anchor text.")
    pair_field: str = Field("text_pair", description="JSONL field holding the text that should embed close to it.")
    scale: float = Field(20.0, gt=0, description="Cosine-similarity scale of the in-batch contrastive loss.")
    holdout: float = Field(0.1, ge=0, lt=1, description="Fraction of pairs held back for evaluation.")


@modkit.hookimpl
def modkit_register_objectives(register):
    register("embed", "modkit_plugins.objectives.embed_impl:Embed", options=EmbedOptions,
             doc="Sentence embeddings (mean or [CLS] pooling, normalised), trained on pairs with in-batch negatives.")


@modkit.hookimpl
def modkit_register_tasks(register):
    register("embed", "modkit_plugins.objectives.embed_task:EmbedTask", doc="One embedding vector per text.")
