"""The `bert` backbone: a post-LN encoder with token + segment + position embeddings."""
from __future__ import annotations

from pydantic import Field

import modkit


class BERTOptions(modkit.Options):
    vocab_size: int = Field(0, ge=0, description="Vocabulary size; 0 = take it from the tokenizer.")
    n_positions: int = Field(512, gt=0, description="Longest sequence (learned positions).")
    type_vocab_size: int = Field(2, gt=0, description="Number of segment (token type) ids.")
    d_model: int = Field(128, gt=0, description="Hidden size.")
    n_layers: int = Field(2, gt=0, description="Number of encoder blocks.")
    n_heads: int = Field(4, gt=0, description="Attention heads per block.")
    d_ff: int | None = Field(None, gt=0, description="Feed-forward size; default 4 * d_model.")
    activation: str = Field("gelu", description="Feed-forward and MLM-transform activation.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Embedding and residual dropout.")
    attn_dropout: float | None = Field(None, ge=0, lt=1, description="Attention-weight dropout; default `dropout`.")
    layer_norm_eps: float = Field(1e-12, gt=0, description="LayerNorm epsilon.")
    pooler: bool = Field(True, description="Keep the pooler (tanh dense layer over the first token).")
    mlm_head: bool = Field(True, description="Keep the masked-LM head (dense + act + LayerNorm, "
                                             "tied decoder with its bias) behind `lm_logits`.")


@modkit.hookimpl
def modkit_register_backbones(register):
    register("bert", "modkit_plugins.backbones.bert_model:BERT", options=BERTOptions,
             doc="Post-LN encoder with token, segment and learned position embeddings, pooler and MLM head.")


@modkit.hookimpl
def modkit_register_checkpoint_formats(register):
    register("bert", "modkit_plugins.backbones.bert_hf:BertFormat")
