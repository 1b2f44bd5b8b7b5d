"""modkit-rope: registers the `rope-decoder` backbone (cheap to import: options and hook only)."""
from pydantic import Field

import modkit

__version__ = "0.1.0"


class RopeOptions(modkit.Options):
    vocab_size: int = Field(0, ge=0, description="Vocabulary size; 0 = the tokenizer's.")
    d_model: int = Field(64, gt=0, description="Width of the hidden states.")
    n_layers: int = Field(2, gt=0, description="Decoder layers.")
    n_heads: int = Field(4, gt=0, description="Attention heads; d_model / n_heads must be even.")
    d_ff: int = Field(0, ge=0, description="Feed-forward width; 0 = 4 * d_model.")
    rope_base: float = Field(10000.0, gt=1, description="Base of the rotary frequencies.")


@modkit.hookimpl
def modkit_register_backbones(register):
    register("rope-decoder", "modkit_rope.model:RopeDecoder", options=RopeOptions,
             doc="A small pre-norm decoder with rotary positions, written without modkit's blocks.")
