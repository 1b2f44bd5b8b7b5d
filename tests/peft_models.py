"""Tiny random backbones of every family, and inputs for them, for the PEFT tests."""
from __future__ import annotations

import torch

import modkit

FAMILIES = ["gpt", "bert", "bart", "t5"]
VOCAB = 97

_OPTIONS = {
    "gpt": dict(d_model=32, n_layers=2, n_heads=4, dropout=0.0),
    "bert": dict(d_model=32, n_layers=2, n_heads=4, dropout=0.0),
    "bart": dict(d_model=32, encoder_layers=2, decoder_layers=2, n_heads=4, d_ff=64, dropout=0.0),
    "t5": dict(d_model=32, d_kv=8, encoder_layers=2, decoder_layers=2, n_heads=4, d_ff=64, dropout=0.0,
               extra_ids=0),
}


def tiny_backbone(family: str, seed: int = 0, **overrides):
    comp = modkit.get_registry().get("backbone", family)
    torch.manual_seed(seed)
    return comp.load()(comp.options(vocab_size=VOCAB, **{**_OPTIONS[family], **overrides})).eval()


def inputs(backbone, batch: int = 3, length: int = 9, seed: int = 1, padded: bool = True) -> dict:
    """Random ids with a right-padded attention mask (row 1 shorter), plus decoder ids for seq2seq."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, length - 3:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if getattr(backbone, "is_encoder_decoder", False):
        out["decoder_input_ids"] = torch.randint(3, VOCAB, (batch, 5), generator=g)
    return out


def hidden(backbone, batch: dict) -> torch.Tensor:
    return backbone(**batch).last_hidden_state
