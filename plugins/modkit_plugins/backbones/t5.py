"""The `t5` backbone: T5's encoder-decoder (relative position bias, RMSNorm, pre-norm)."""
from __future__ import annotations

from pydantic import Field

import modkit


class T5Options(modkit.Options):
    vocab_size: int = Field(0, ge=0, description="Vocabulary size; 0 = take it from the tokenizer.")
    d_model: int = Field(128, gt=0, description="Hidden size.")
    d_kv: int | None = Field(None, gt=0, description="Size of each attention head; default d_model / n_heads.")
    d_ff: int | None = Field(None, gt=0, description="Feed-forward size; default 4 * d_model.")
    encoder_layers: int = Field(2, gt=0, description="Number of encoder blocks.")
    decoder_layers: int = Field(2, gt=0, description="Number of decoder blocks.")
    n_heads: int = Field(4, gt=0, description="Attention heads per block.")
    relative_attention_num_buckets: int = Field(32, gt=1, description="Relative-position buckets.")
    relative_attention_max_distance: int = Field(128, gt=1, description="Distance where buckets stop growing.")
    feed_forward_proj: str = Field(
        "relu", description="relu (T5 v1.0) or gated-gelu (v1.1); any 'ACT' or 'gated-ACT'.")
    tie_embeddings: bool = Field(True, description="LM head shares the token embedding (v1.0).")
    rescale_output: bool = Field(
        True, description="Scale decoder output by d_model**-0.5 before the head (v1.0's tied head).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Embedding, residual, attention and FFN dropout.")
    layer_norm_eps: float = Field(1e-6, gt=0, description="RMSNorm epsilon.")
    pad_token_id: int = Field(0, ge=0, description="Padding id.")
    eos_token_id: int = Field(1, ge=0, description="End of sequence.")
    decoder_start_token_id: int = Field(0, ge=0, description="First decoder input (T5 uses the pad).")
    extra_ids: int = Field(100, ge=0, description="Sentinel ids <extra_id_0>... (span corruption), added past the "
                                                    "tokenizer's vocabulary when vocab_size is taken from a tokenizer "
                                                    "that has none; 100 as in T5.")


@modkit.hookimpl
def modkit_register_backbones(register):
    register("t5", "modkit_plugins.backbones.t5_model:T5", options=T5Options,
             doc="T5 encoder-decoder: relative position bias, RMSNorm pre-norm blocks, v1.0 or v1.1.")


@modkit.hookimpl
def modkit_register_checkpoint_formats(register):
    register("t5", "modkit_plugins.backbones.t5_hf:T5Format")
