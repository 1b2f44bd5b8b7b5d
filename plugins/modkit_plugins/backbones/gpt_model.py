"""GPT: token + learned position embeddings, a stack of causal blocks, a tied LM head."""
from __future__ import annotations

import torch
from torch import nn

from modkit.blocks import Block, LearnedPositions, attention_bias
from modkit.interfaces import Backbone
from modkit.outputs import ModelOutput


class GPT(nn.Module, Backbone):
    is_decoder = True

    def __init__(self, config):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("gpt: vocab_size must be set (or come from the tokenizer)")
        self.config = config
        self.d_model, self.vocab_size = config.d_model, config.vocab_size
        pre_norm = config.variant == "gpt2"
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = LearnedPositions(config.n_positions, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.d_ff or 4 * config.d_model,
                  pre_norm=pre_norm, eps=config.layer_norm_eps, activation=config.activation,
                  dropout=config.dropout, attn_dropout=config.dropout)
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if pre_norm else None
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        past_key_values: list | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        b, t = input_ids.shape
        past_len = past_key_values[0][0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, device=input_ids.device)[None]
        x = self.drop(self.embed(input_ids) + self.positions(position_ids))  # (B, T, D)
        bias = None
        if attention_mask is not None:
            bias = attention_bias(attention_mask, t, past_len + t, causal=True,
                                  dtype=x.dtype, device=x.device)
        hidden, attns, cache = [], [], []
        for i, block in enumerate(self.blocks):
            if output_hidden_states:
                hidden.append(x)
            x, weights, _, kv = block(
                x, bias=bias, causal=True, past=past_key_values[i] if past_key_values else None,
                use_cache=use_cache, output_attentions=output_attentions)
            attns.append(weights)
            cache.append(kv)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if output_hidden_states:
            hidden.append(x)
        return ModelOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attns) if output_attentions else None,
            past_key_values=cache if use_cache else None,
        )

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return hidden @ weight.T  # (B, T, V)
