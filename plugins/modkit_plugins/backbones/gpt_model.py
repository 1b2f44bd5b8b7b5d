"""GPT: token + learned position embeddings, a stack of causal blocks, a tied LM head."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modkit.nn.blocks import Block, LearnedPositions, attention_bias, init_weights, prefix_positions, run_blocks
from modkit.nn.generation import GenerationMixin, decode
from modkit.interfaces import Backbone, BackboneCapabilities
from modkit.nn.outputs import ModelOutput


class GPT(nn.Module, GenerationMixin, Backbone):
    is_decoder = True

    def __init__(self, config):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("gpt: vocab_size must be set (or come from the tokenizer)")
        self.config = config
        self.d_model, self.vocab_size = config.d_model, config.vocab_size
        pre_norm = config.variant == "gpt2"
        attn_dropout = config.dropout if config.attn_dropout is None else config.attn_dropout
        embd_dropout = config.dropout if config.embd_dropout is None else config.embd_dropout
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = LearnedPositions(config.n_positions, config.d_model)
        self.drop = nn.Dropout(embd_dropout)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.d_ff or 4 * config.d_model,
                  pre_norm=pre_norm, eps=config.layer_norm_eps, activation=config.activation,
                  dropout=config.dropout, attn_dropout=attn_dropout)
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if pre_norm else None
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(init_weights)

    @classmethod
    def capabilities(cls, options) -> BackboneCapabilities:
        return BackboneCapabilities(max_positions=options.n_positions, token_embedding="embed", block=Block,
                                    inputs=frozenset({"position_ids", "token_type_ids", "inputs_embeds"}))

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: list | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """``attention_mask`` (B, past + T) has 1 for real tokens. Positions default to
        past + 0..T-1 whatever the padding, as in transformers; pass ``position_ids`` for
        left-padded batches (``generate`` does). ``token_type_ids`` are looked up in the token
        embedding, as the original GPTs did. ``inputs_embeds`` (B, T, D) replace
        ``embed(input_ids)``."""
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]
        past_len = past_key_values[0][0][0].shape[2] if past_key_values else 0
        offset = prefix_positions(self.blocks)  # tokens after a prefix that holds positions
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, device=x.device)[None]
        position_ids = position_ids + offset
        x = x + self.positions(position_ids)  # (B, T, D)
        if token_type_ids is not None:
            x = x + self.embed(token_type_ids)
        x = self.drop(x)
        bias = None
        if attention_mask is not None:  # without a mask, SDPA's fused causal kernel applies
            bias = attention_bias(attention_mask, t, past_len + t, causal=True,
                                  dtype=x.dtype, device=x.device)
        x, hidden, attns, _, cache = run_blocks(
            self.blocks, x, bias=bias, causal=True, past=past_key_values, use_cache=use_cache,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            final=self.final_norm)
        return ModelOutput(last_hidden_state=x, hidden_states=hidden, attentions=attns, past_key_values=cache)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight)  # (B, T, V)

    def _generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                  num_beams: int, num_return_sequences: int, **options: Any) -> torch.Tensor:
        """The prompt followed by the new tokens (B * num_return_sequences, T + n), as
        transformers' ``generate`` returns. With an ``attention_mask`` (left padding),
        positions count real tokens only, as transformers' generation computes them, and the
        repetition penalty leaves the padding out."""
        if num_beams > 1:  # each row's beams start from the same prompt
            input_ids = input_ids.repeat_interleave(num_beams, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(num_beams, dim=0)
        positions = None
        if attention_mask is not None:
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
            options["prompt_padding"] = (attention_mask != 0).int().argmax(dim=1)
        # beams only move within their prompt row, whose mask and positions they share
        state = {"mask": attention_mask, "positions": positions}

        def step(tokens: torch.Tensor, cache):
            if cache is not None and state["mask"] is not None:
                mask = state["mask"]
                state["mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                state["positions"] = state["positions"][:, -1:] + 1
            out = self(tokens, state["mask"], position_ids=state["positions"],
                       past_key_values=cache, use_cache=True)
            return self.lm_logits(out.last_hidden_state[:, -1]), out.past_key_values

        new = decode(step, input_ids, num_beams=num_beams, num_return_sequences=num_return_sequences, **options)
        prompt = input_ids[::num_beams].repeat_interleave(num_return_sequences, dim=0)
        return torch.cat([prompt, new], dim=1)


class GPTLMHeadModel(nn.Module):
    """A GPT whose forward also returns ``logits``, like transformers' ``*LMHeadModel``.

    The head is the backbone's own (tied embedding, or its untied ``lm_head``), so this
    wrapper has no weights: ``backbone`` stays usable alone by objectives and PEFT.
    """

    def __init__(self, backbone: GPT):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> ModelOutput:
        out = self.backbone(input_ids, attention_mask, **kwargs)
        out.logits = self.backbone.lm_logits(out.last_hidden_state)
        return out

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **kwargs) -> torch.Tensor:
        return self.backbone.generate(input_ids, attention_mask, **kwargs)
