"""A decoder-only transformer with rotary positions (RoFormer), on its own layers.

It uses no modkit.nn.blocks: it meets modkit's contracts directly. Its linear layers carry
role names (so LoRA finds them), and its forward keeps the cache protocol of
:class:`modkit.interfaces.CachedDecoder` (one ``((keys, values), None)`` per layer, a mask over
past + new tokens), so modkit exports it with a cached step graph and generates with it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modkit.interfaces import Backbone, BackboneCapabilities
from modkit.nn.outputs import ModelOutput


class Rotary:
    """Rotate query/key channel pairs by position-dependent angles: a position transform,
    ``(q, k, position_ids) -> (q, k)``, as :class:`modkit.nn.blocks.Attention` takes one."""

    def __init__(self, d_head: int, base: float = 10000.0):
        self.inv_freq = 1.0 / base ** (torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor):
        angles = position_ids[..., None].float() * self.inv_freq  # (B|1, T, Dh/2)
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B|1, 1, T, Dh)
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        return q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin


def _linear(d_in: int, d_out: int, role: str) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    layer.modkit_role = role  # the name PEFT methods target
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class RopeAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, rotary: Rotary):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q, self.k, self.v, self.o = (_linear(d_model, d_model, f"attn.{r}") for r in "qkvo")
        self.rotary = rotary

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, x, bias, position_ids, past):
        q, k = self.rotary(self._heads(self.q(x)), self._heads(self.k(x)), position_ids)
        v = self._heads(self.v(x))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        weights = ((q @ k.transpose(-1, -2)) / math.sqrt(self.d_head) + bias).softmax(-1)
        out = (weights @ v).transpose(1, 2).flatten(2)
        return self.o(out), (k, v)


class RopeLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, rotary: Rotary):
        super().__init__()
        self.attn_norm, self.ffn_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = RopeAttention(d_model, n_heads, rotary)
        self.up, self.down = _linear(d_model, d_ff, "ffn.up"), _linear(d_ff, d_model, "ffn.down")

    def forward(self, x, bias, position_ids, past):
        h, kv = self.attn(self.attn_norm(x), bias, position_ids, past)
        x = x + h
        return x + self.down(F.gelu(self.up(self.ffn_norm(x)))), kv


class RopeDecoder(nn.Module, Backbone):
    is_decoder = True

    def __init__(self, config):
        super().__init__()
        if config.vocab_size <= 0 or config.d_model % (2 * config.n_heads):
            raise ValueError("rope-decoder: vocab_size must be set and d_model / n_heads even")
        self.config = config
        self.d_model, self.vocab_size = config.d_model, config.vocab_size
        rotary = Rotary(config.d_model // config.n_heads, config.rope_base)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.layers = nn.ModuleList(RopeLayer(config.d_model, config.n_heads, config.d_ff or 4 * config.d_model, rotary)
                                    for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model)

    def attention_bias(self, attention_mask, q_len: int, k_len: int, dtype) -> torch.Tensor:
        """(B|1, 1, q_len, k_len): the new queries are the last q_len of k_len positions."""
        keep = torch.arange(k_len)[None, :] <= torch.arange(k_len - q_len, k_len)[:, None]  # causal
        keep = keep[None, None]
        if attention_mask is not None:
            keep = keep & attention_mask[:, None, None, :].bool()
        return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)

    @classmethod
    def capabilities(cls, options) -> BackboneCapabilities:
        # rotary positions have no table to run out of; the layer is the unit to shard
        return BackboneCapabilities(max_positions=None, inputs=frozenset({"position_ids", "inputs_embeds"}),
                                    token_embedding="embed", block=RopeLayer)

    def forward(self, input_ids, attention_mask=None, *, inputs_embeds=None, position_ids=None, past_key_values=None,
                use_cache=False, output_hidden_states=False, output_attentions=False) -> ModelOutput:
        if output_attentions:
            raise NotImplementedError("rope-decoder does not return attention weights")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]
        past_len = past_key_values[0][0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t)[None]
        bias = self.attention_bias(attention_mask, t, past_len + t, x.dtype)
        hidden, cache = [], []
        for i, layer in enumerate(self.layers):
            hidden.append(x)
            x, kv = layer(x, bias, position_ids, past_key_values[i][0] if past_key_values else None)
            cache.append((kv, None))
        x = self.final_norm(x)
        return ModelOutput(last_hidden_state=x, hidden_states=(*hidden, x) if output_hidden_states else None,
                           past_key_values=cache if use_cache else None)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.embed.weight)  # tied
