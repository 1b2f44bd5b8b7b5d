"""BERT: embeddings (token + segment + position, LayerNorm), post-LN encoder blocks, pooler,
and the masked-LM head behind ``lm_logits``; :class:`BertWithHead` adds one task head."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modkit.nn.blocks import (ACTIVATIONS, Block, LearnedPositions, attention_bias, init_weights, prefix_positions,
                              run_blocks)
from modkit.interfaces import Backbone, BackboneCapabilities
from modkit.nn.outputs import ModelOutput


class BertMLMHead(nn.Module):
    """transform (dense, activation, LayerNorm), then the tied decoder plus its own bias."""

    def __init__(self, d_model: int, vocab_size: int, activation: str, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.act = ACTIVATIONS[activation]
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), embedding, self.bias)


class BERT(nn.Module, Backbone):
    def __init__(self, config):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("bert: vocab_size must be set (or come from the tokenizer)")
        self.config = config
        self.d_model, self.vocab_size = config.d_model, config.vocab_size
        d = config.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.token_types = nn.Embedding(config.type_vocab_size, d)
        self.positions = LearnedPositions(config.n_positions, d)
        self.embed_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)
        attn_dropout = config.dropout if config.attn_dropout is None else config.attn_dropout
        self.blocks = nn.ModuleList(
            Block(d, config.n_heads, config.d_ff or 4 * d, pre_norm=False, eps=config.layer_norm_eps,
                  activation=config.activation, dropout=config.dropout, attn_dropout=attn_dropout)
            for _ in range(config.n_layers)
        )
        self.pooler = nn.Linear(d, d) if config.pooler else None
        self.mlm_head = (BertMLMHead(d, config.vocab_size, config.activation, config.layer_norm_eps)
                         if config.mlm_head else None)
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
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """``attention_mask`` (B, T) has 1 for real tokens; segments default to 0 and
        positions to 0..T-1, as in transformers. ``inputs_embeds`` (B, T, D) replace
        ``embed(input_ids)``."""
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]
        if position_ids is None:
            position_ids = torch.arange(t, device=x.device)[None]
        position_ids = position_ids + prefix_positions(self.blocks)  # tokens after a prefix that holds positions
        if token_type_ids is None:
            token_type_ids = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        x = x + self.token_types(token_type_ids) + self.positions(position_ids)
        x = self.drop(self.embed_norm(x))  # (B, T, D)
        bias = None
        if attention_mask is not None:
            bias = attention_bias(attention_mask, t, t, causal=False, dtype=x.dtype, device=x.device)
        x, hidden, attns, _, _ = run_blocks(self.blocks, x, bias=bias, output_hidden_states=output_hidden_states,
                                            output_attentions=output_attentions)
        return ModelOutput(
            last_hidden_state=x,
            pooler_output=torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None,
            hidden_states=hidden,
            attentions=attns,
        )

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.mlm_head is None:
            raise NotImplementedError("this bert was built with mlm_head = false")
        return self.mlm_head(hidden, self.embed.weight)  # (B, T, V)


@dataclass
class BertPreTrainingOutput(ModelOutput):
    """transformers' BertForPreTraining names; ``logits`` is the MLM's too."""

    prediction_logits: Any = None
    seq_relationship_logits: Any = None


HEAD_KINDS = ("mlm", "pretraining", "nsp", "sequence", "token")


class BertWithHead(nn.Module):
    """A BERT with one task head, as transformers' ``BertFor*`` classes; forward adds ``logits``.

    ``kind``: ``mlm`` (the backbone's own MLM head), ``pretraining`` (MLM + next-sentence),
    ``nsp``, ``sequence`` (classifier on the pooled first token), ``token`` (per-token classifier).
    """

    def __init__(self, backbone: BERT, kind: str, *, num_labels: int = 2, dropout: float = 0.1):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"bert head kind {kind!r}; expected one of {', '.join(HEAD_KINDS)}")
        needs = {"mlm": backbone.mlm_head, "pretraining": backbone.mlm_head}
        if kind in needs and needs[kind] is None:
            raise ValueError(f"a bert {kind} head needs the backbone's mlm_head")
        if kind in ("nsp", "pretraining", "sequence") and backbone.pooler is None:
            raise ValueError(f"a bert {kind} head needs the backbone's pooler")
        self.backbone, self.kind = backbone, kind
        d = backbone.d_model
        self.nsp = nn.Linear(d, 2) if kind in ("nsp", "pretraining") else None
        self.dropout = nn.Dropout(dropout) if kind in ("sequence", "token") else None
        self.classifier = nn.Linear(d, num_labels) if kind in ("sequence", "token") else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> ModelOutput:
        out = self.backbone(input_ids, attention_mask, **kwargs)
        h, pooled = out.last_hidden_state, out.pooler_output
        if self.kind == "mlm":
            out.logits = self.backbone.lm_logits(h)
        elif self.kind == "pretraining":
            mlm = self.backbone.lm_logits(h)
            out = BertPreTrainingOutput(**vars(out))
            out.logits = out.prediction_logits = mlm
            out.seq_relationship_logits = self.nsp(pooled)
        elif self.kind == "nsp":
            out.logits = self.nsp(pooled)
        elif self.kind == "sequence":
            out.logits = self.classifier(self.dropout(pooled))
        else:
            out.logits = self.classifier(self.dropout(h))
        return out
