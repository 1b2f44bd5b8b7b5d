"""The `gpt` backbone: a decoder-only transformer, GPT-1 (post-LN) or GPT-2 (pre-LN)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

import modkit


class GPTOptions(modkit.Options):
    vocab_size: int = Field(0, ge=0, description="Vocabulary size; 0 = take it from the tokenizer.")
    n_positions: int = Field(512, gt=0, description="Longest sequence (learned positions).")
    d_model: int = Field(128, gt=0, description="Hidden size.")
    n_layers: int = Field(2, gt=0, description="Number of decoder blocks.")
    n_heads: int = Field(4, gt=0, description="Attention heads per block.")
    d_ff: int | None = Field(None, gt=0, description="Feed-forward size; default 4 * d_model.")
    variant: Literal["gpt1", "gpt2"] = Field(
        "gpt2", description="gpt1: post-LN blocks, no final norm; gpt2: pre-LN with a final LayerNorm.")
    activation: str = Field("gelu_new", description="Feed-forward activation: gelu, gelu_new, relu.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Residual dropout (and the default of the two below).")
    embd_dropout: float | None = Field(None, ge=0, lt=1, description="Embedding dropout; default `dropout`.")
    attn_dropout: float | None = Field(None, ge=0, lt=1, description="Attention-weight dropout; default `dropout`.")
    layer_norm_eps: float = Field(1e-5, gt=0, description="LayerNorm epsilon.")
    tie_embeddings: bool = Field(True, description="Share the input embedding with the LM head.")


@modkit.hookimpl
def modkit_register_backbones(register):
    register("gpt", "modkit_plugins.backbones.gpt_model:GPT", options=GPTOptions,
             doc="Decoder-only transformer with learned positions (GPT-1 post-LN or GPT-2 pre-LN).")


@modkit.hookimpl
def modkit_register_checkpoint_formats(register):
    register("gpt2", "modkit_plugins.backbones.gpt_hf:GPT2Format")
    register("openai-gpt", "modkit_plugins.backbones.gpt_hf:OpenAIGPTFormat")
