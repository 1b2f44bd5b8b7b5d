"""BART: a bidirectional encoder and an autoregressive decoder, post-LN blocks, learned positions.

Submodule names follow the roles, not Hugging Face's names; ``bart_hf`` maps between them.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from modkit.nn.blocks import Block, LearnedPositions, attention_bias, init_weights, prefix_positions, run_blocks
from modkit.interfaces import BackboneCapabilities
from modkit.nn.encoder_decoder import EncoderDecoderModel

BART_POSITION_OFFSET = 2  # fairseq reserved the first two position ids


class ClassificationHead(nn.Module):
    """BART's sequence-classification head over the last eos token's representation."""

    def __init__(self, d_model: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))


class BART(EncoderDecoderModel):
    def __init__(self, config):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("bart: vocab_size must be set (or come from the tokenizer)")
        self.config = config
        d, v = config.d_model, config.vocab_size
        self.d_model, self.vocab_size = d, v
        block = partial(Block, d, config.n_heads, config.d_ff or 4 * d, pre_norm=False,
                        eps=config.layer_norm_eps, activation=config.activation,
                        dropout=config.dropout, attn_dropout=config.attention_dropout,
                        ffn_dropout=config.activation_dropout)
        self.embed = nn.Embedding(v, d, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.encoder_positions = LearnedPositions(config.n_positions, d, offset=BART_POSITION_OFFSET)
        self.decoder_positions = LearnedPositions(config.n_positions, d, offset=BART_POSITION_OFFSET)
        self.encoder_embed_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.decoder_embed_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.encoder_blocks = nn.ModuleList(block() for _ in range(config.encoder_layers))
        self.decoder_blocks = nn.ModuleList(block(cross=True) for _ in range(config.decoder_layers))
        self.drop = nn.Dropout(config.dropout)
        self.register_buffer("final_logits_bias", torch.zeros(v))
        self.classification_head = (
            ClassificationHead(d, config.num_labels, config.dropout) if config.num_labels else None)
        self.apply(init_weights)

    @classmethod
    def capabilities(cls, options) -> BackboneCapabilities:
        return BackboneCapabilities(max_positions=options.n_positions, token_embedding="embed", block=Block,
                                    inputs=frozenset({"inputs_embeds"}), decoder_start="eos")

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids) * self.embed_scale

    def _embed(self, x: torch.Tensor, positions: LearnedPositions, norm: nn.LayerNorm, past_len) -> torch.Tensor:
        """Token embeddings ``x`` (B, T, D) plus positions from ``past_len``, normalised."""
        pos = torch.arange(past_len, past_len + x.shape[1], device=x.device)[None]
        return self.drop(norm(x + positions(pos)))  # (B, T, D)

    def run_encoder(self, input_ids, attention_mask, inputs_embeds=None, **outputs):
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        x = self._embed(embeds, self.encoder_positions, self.encoder_embed_norm, prefix_positions(self.encoder_blocks))
        t = x.shape[1]
        bias = None if attention_mask is None else attention_bias(
            attention_mask, t, t, causal=False, dtype=x.dtype, device=x.device)
        return run_blocks(self.encoder_blocks, x, bias=bias, **outputs)

    def run_decoder(self, decoder_input_ids, encoder_hidden, attention_mask,
                    decoder_attention_mask=None, past=None, **outputs):
        past_len = past[0][0][0].shape[2] if past else 0
        x = self._embed(self.embed_tokens(decoder_input_ids), self.decoder_positions, self.decoder_embed_norm,
                        past_len + prefix_positions(self.decoder_blocks))
        t = decoder_input_ids.shape[1]
        self_bias = None if decoder_attention_mask is None else attention_bias(
            decoder_attention_mask, t, past_len + t, causal=True, dtype=x.dtype, device=x.device)
        cross_bias = None if attention_mask is None else attention_bias(
            attention_mask, t, attention_mask.shape[1], causal=False, dtype=x.dtype, device=x.device)
        return run_blocks(self.decoder_blocks, x, bias=self_bias, causal=True, source=encoder_hidden,
                          source_bias=cross_bias, past=past, **outputs)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.embed.weight, self.final_logits_bias)  # tied head

    def classify(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, num_labels) from the decoder state at each row's last eos."""
        if self.classification_head is None:
            raise ValueError("this BART has no classification head (set num_labels)")
        hidden = self(input_ids, attention_mask).last_hidden_state
        eos = input_ids.eq(self.config.eos_token_id)
        counts = eos.sum(1)
        if bool((counts == 0).any()) or bool((counts != counts[0]).any()):
            raise ValueError("every row must hold the same number (>= 1) of eos tokens")
        last_eos = hidden[eos].view(hidden.shape[0], -1, hidden.shape[-1])[:, -1]
        return self.classification_head(last_eos)
