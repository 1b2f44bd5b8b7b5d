"""Model outputs with the field names transformers users know."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class ModelOutput:
    last_hidden_state: Any = None
    logits: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    past_key_values: Any = None
    pooler_output: Any = None
    # encoder-decoder models
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    decoder_hidden_states: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def keys(self) -> list[str]:
        """Names of the fields that are set, as in transformers."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]
