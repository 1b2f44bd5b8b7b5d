"""The `bart` backbone: BART's encoder-decoder (learned positions, post-LN, GELU)."""
from __future__ import annotations

from pydantic import Field

import modkit


class BARTOptions(modkit.Options):
    vocab_size: int = Field(0, ge=0, description="Vocabulary size; 0 = take it from the tokenizer.")
    n_positions: int = Field(1024, gt=0, description="Longest sequence (learned positions, offset 2).")
    d_model: int = Field(128, gt=0, description="Hidden size.")
    encoder_layers: int = Field(2, gt=0, description="Number of encoder blocks.")
    decoder_layers: int = Field(2, gt=0, description="Number of decoder blocks.")
    n_heads: int = Field(4, gt=0, description="Attention heads per block (encoder and decoder).")
    d_ff: int | None = Field(None, gt=0, description="Feed-forward size; default 4 * d_model.")
    activation: str = Field("gelu", description="Feed-forward activation: gelu, gelu_new, relu.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Embedding and residual dropout.")
    attention_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on attention weights.")
    activation_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after the FFN activation.")
    scale_embedding: bool = Field(False, description="Multiply token embeddings by sqrt(d_model).")
    layer_norm_eps: float = Field(1e-5, gt=0, description="LayerNorm epsilon.")
    pad_token_id: int = Field(1, ge=0, description="Padding id (its embedding row gets no gradient).")
    eos_token_id: int = Field(2, ge=0, description="End of sequence; the classification head reads it.")
    decoder_start_token_id: int = Field(2, ge=0, description="First decoder input (BART uses the eos).")
    forced_bos_token_id: int | None = Field(
        None, ge=0, description="generate: the only allowed first new token (transformers' forced_bos_token_id).")
    forced_eos_token_id: int | None = Field(
        None, ge=0, description="generate: the only allowed token when max_new_tokens is reached.")
    num_labels: int = Field(0, ge=0, description="Sequence-classification classes; 0 = no head.")


@modkit.hookimpl
def modkit_register_backbones(register):
    register("bart", "modkit_plugins.backbones.bart_model:BART", options=BARTOptions,
             doc="BART encoder-decoder: learned positions, post-LN blocks, cross-attention, tied LM head.")


@modkit.hookimpl
def modkit_register_checkpoint_formats(register):
    register("bart", "modkit_plugins.backbones.bart_hf:BartFormat")
