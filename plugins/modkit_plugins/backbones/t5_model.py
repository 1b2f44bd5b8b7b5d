"""T5: pre-norm RMSNorm blocks without biases, relative position bias shared across layers.

v1.0 uses a ReLU feed-forward and a tied head that sees the decoder output scaled by
d_model**-0.5; v1.1 a gated-GELU feed-forward and an untied head.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from modkit.nn.blocks import Block, RMSNorm, attention_bias, prefix_positions, run_blocks
from modkit.interfaces import BackboneCapabilities
from modkit.nn.encoder_decoder import EncoderDecoderModel

from .t5_positions import RelativePositionBias


def sentinel_token(i: int) -> str:
    """The text of T5's i-th sentinel, which stands for the i-th dropped span."""
    return f"<extra_id_{i}>"


def sentinel_id(tokenizer_vocab_size: int, i: int) -> int:
    """T5 numbers sentinels down from the end of the tokenizer's vocabulary."""
    return tokenizer_vocab_size - 1 - i


def parse_feed_forward(proj: str) -> tuple[str, bool]:
    """``"relu"`` -> (relu, not gated); ``"gated-gelu"`` -> (gelu_new, gated), as transformers reads it."""
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"t5: feed_forward_proj {proj!r} must be 'ACT' or 'gated-ACT'")
    gated = len(parts) == 2
    return ("gelu_new" if proj == "gated-gelu" else parts[-1]), gated


class T5(EncoderDecoderModel):
    def __init__(self, config):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("t5: vocab_size must be set (or come from the tokenizer)")
        self.config = config
        d, v, h = config.d_model, config.vocab_size, config.n_heads
        self.d_model, self.vocab_size = d, v
        activation, gated = parse_feed_forward(config.feed_forward_proj)
        block = partial(Block, d, h, config.d_ff or 4 * d, pre_norm=True, norm="rms",
                        eps=config.layer_norm_eps, activation=activation, gated=gated, bias=False,
                        d_head=config.d_kv or d // h, attn_scale=1.0,  # T5 folds 1/sqrt(d) into init
                        dropout=config.dropout, attn_dropout=config.dropout, ffn_dropout=config.dropout)
        relative = partial(RelativePositionBias, config.relative_attention_num_buckets,
                           config.relative_attention_max_distance, h)
        self.embed = nn.Embedding(v, d)
        self.encoder_bias = relative(bidirectional=True)
        self.decoder_bias = relative(bidirectional=False)
        self.encoder_blocks = nn.ModuleList(block() for _ in range(config.encoder_layers))
        self.decoder_blocks = nn.ModuleList(block(cross=True) for _ in range(config.decoder_layers))
        self.encoder_norm = RMSNorm(d, config.layer_norm_eps)
        self.decoder_norm = RMSNorm(d, config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.lm_head = None if config.tie_embeddings else nn.Linear(d, v, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # T5's scheme: variance 1/fan_in, with attention's 1/sqrt(d_head) moved into q's init
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)
        elif isinstance(module, nn.Linear):
            std = module.in_features ** -0.5
            if getattr(module, "modkit_role", "").endswith(".q"):
                std *= (module.out_features // self.config.n_heads) ** -0.5
            nn.init.normal_(module.weight, std=std)

    def _final(self, norm: RMSNorm):
        return lambda x: self.drop(norm(x))

    @classmethod
    def capabilities(cls, options) -> BackboneCapabilities:
        return BackboneCapabilities(max_positions=None, token_embedding="embed", block=Block,  # relative positions
                                    inputs=frozenset({"inputs_embeds"}), decoder_start="pad",
                                    extra_ids=options.extra_ids)

    def run_encoder(self, input_ids, attention_mask, inputs_embeds=None, **outputs):
        x = self.drop(self.embed(input_ids) if inputs_embeds is None else inputs_embeds)  # (B, S, D)
        t = x.shape[1]
        bias = self.encoder_bias(t, t)  # (1, H, S, S), shared by every layer
        if attention_mask is not None:
            bias = bias + attention_bias(attention_mask, t, t, causal=False, dtype=x.dtype, device=x.device)
        return run_blocks(self.encoder_blocks, x, bias=bias, final=self._final(self.encoder_norm), **outputs)

    def run_decoder(self, decoder_input_ids, encoder_hidden, attention_mask,
                    decoder_attention_mask=None, past=None, **outputs):
        past_len = past[0][0][0].shape[2] if past else 0
        t = decoder_input_ids.shape[1]
        x = self.drop(self.embed(decoder_input_ids))  # (B, T, D)
        # a prefix holding positions is relatively biased like earlier tokens (as in its KV cache)
        p = prefix_positions(self.decoder_blocks)
        self_bias = self.decoder_bias(t, p + past_len + t) + F.pad(attention_bias(
            decoder_attention_mask, t, past_len + t, causal=True, dtype=x.dtype, device=x.device), (p, 0))
        cross_bias = None if attention_mask is None else attention_bias(
            attention_mask, t, attention_mask.shape[1], causal=False, dtype=x.dtype, device=x.device)
        return run_blocks(self.decoder_blocks, x, bias=self_bias, source=encoder_hidden,
                          source_bias=cross_bias, past=past, final=self._final(self.decoder_norm),
                          **outputs)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.rescale_output:
            hidden = hidden * self.d_model ** -0.5
        return F.linear(hidden, self.embed.weight if self.lm_head is None else self.lm_head.weight)

