"""Hugging Face ``model_type: bart`` checkpoints <-> the modkit BART."""
from __future__ import annotations

from typing import Any

import torch

from modkit.builder.hf.convert import assign_state
from modkit.builder.hf.weight_table import Row, WeightTable
from modkit.errors import ArtifactError
from modkit.interfaces import CheckpointFormat

from .bart import BARTOptions
from .bart_model import BART

def _rows() -> list[Row]:
    # the token embedding's other names in transformers' files (all tied to `shared`)
    rows = [Row("embed.weight", "shared.weight", aliases=(
        "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"))]
    for side, layer in (("encoder", "e"), ("decoder", "d")):
        ours, theirs = f"{side}_blocks.{{{layer}}}", f"{side}.layers.{{{layer}}}"
        subs = [("attn", "self_attn")] + ([("cross", "encoder_attn")] if side == "decoder" else [])
        for p in ("weight", "bias"):
            rows += [Row(f"{side}_positions.weight", f"{side}.embed_positions.weight"),
                     Row(f"{side}_embed_norm.{p}", f"{side}.layernorm_embedding.{p}"),
                     Row(f"{ours}.ffn.up.{p}", f"{theirs}.fc1.{p}"),
                     Row(f"{ours}.ffn.down.{p}", f"{theirs}.fc2.{p}"),
                     Row(f"{ours}.ffn_norm.{p}", f"{theirs}.final_layer_norm.{p}")]
            for role, hf in subs:
                rows += [Row(f"{ours}.{role}.{r}.{p}", f"{theirs}.{hf}.{h}.{p}")
                         for r, h in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj"))]
                rows.append(Row(f"{ours}.{role}_norm.{p}", f"{theirs}.{hf}_layer_norm.{p}"))
            rows += [Row(f"classification_head.{n}.{p}", f"classification_head.{n}.{p}")
                     for n in ("dense", "out_proj")]
    return rows


#: behind ``model.`` in transformers' files, except the classification head
TABLE = WeightTable(_rows(), source="bart checkpoint")
_OUTSIDE = ("classification_head.",)


#: the epsilon of every LayerNorm in transformers' BART (not a config setting there)
HF_LAYER_NORM_EPS = 1e-5


def options_from_config(config: dict[str, Any], num_labels: int) -> BARTOptions:
    if config.get("normalize_before") or config.get("add_final_layer_norm"):
        raise ArtifactError("bart: pre-norm variants (mBART style) are not supported")
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"),
                     ("encoder_ffn_dim", "decoder_ffn_dim")):
        if config.get(enc, 16) != config.get(dec, 16) and dec in config:
            raise ArtifactError(f"bart: {enc} != {dec} is not supported")
    return BARTOptions(
        vocab_size=config["vocab_size"], n_positions=config.get("max_position_embeddings", 1024),
        d_model=config.get("d_model", 1024), encoder_layers=config.get("encoder_layers", 12),
        decoder_layers=config.get("decoder_layers", 12),
        n_heads=config.get("encoder_attention_heads", 16), d_ff=config.get("encoder_ffn_dim", 4096),
        activation=config.get("activation_function", "gelu"), dropout=config.get("dropout", 0.1),
        attention_dropout=config.get("attention_dropout", 0.0),
        activation_dropout=config.get("activation_dropout", 0.0),
        scale_embedding=bool(config.get("scale_embedding", False)),
        pad_token_id=config.get("pad_token_id", 1), eos_token_id=config.get("eos_token_id", 2),
        decoder_start_token_id=config.get("decoder_start_token_id", 2), num_labels=num_labels,
        # transformers' BartConfig forces the eos as the last generated token unless told not to
        forced_bos_token_id=config.get("forced_bos_token_id"),
        forced_eos_token_id=config.get("forced_eos_token_id", 2),
    )


class BartFormat(CheckpointFormat):
    def from_hf(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> BART:
        weights = dict(weights)
        bias = weights.pop("final_logits_bias", None)  # (1, vocab) there, (vocab,) here
        state = TABLE.from_hf(weights, prefix="model.")
        if "embed.weight" not in state:
            raise ArtifactError("bart: the checkpoint has no token embedding (model.shared.weight)")
        head = state.get("classification_head.out_proj.weight")
        options = options_from_config(config, 0 if head is None else head.shape[0])
        state["final_logits_bias"] = (torch.zeros(options.vocab_size) if bias is None  # absent: zero
                                      else bias.reshape(-1))
        return assign_state(lambda: BART(options), state, "bart checkpoint")

    def to_hf(self, model: BART) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        c = model.config
        if c.layer_norm_eps != HF_LAYER_NORM_EPS:  # a folder transformers would compute differently
            raise ArtifactError(f"bart: layer_norm_eps = {c.layer_norm_eps:g} cannot be written to a Hugging Face "
                                f"folder: transformers' BART has no such setting and always uses "
                                f"{HF_LAYER_NORM_EPS:g}; build with layer_norm_eps = {HF_LAYER_NORM_EPS:g} to export it")
        state = model.state_dict()
        weights = TABLE.to_hf(state, prefix="model.", keep=_OUTSIDE)
        weights["final_logits_bias"] = state["final_logits_bias"][None].contiguous()
        head = model.classification_head is not None
        config = {
            "model_type": "bart",
            "architectures": ["BartForSequenceClassification" if head else "BartForConditionalGeneration"],
            "vocab_size": c.vocab_size, "max_position_embeddings": c.n_positions,
            "d_model": c.d_model, "encoder_layers": c.encoder_layers, "decoder_layers": c.decoder_layers,
            "encoder_attention_heads": c.n_heads, "decoder_attention_heads": c.n_heads,
            "encoder_ffn_dim": c.d_ff or 4 * c.d_model, "decoder_ffn_dim": c.d_ff or 4 * c.d_model,
            "activation_function": c.activation, "dropout": c.dropout,
            "attention_dropout": c.attention_dropout, "activation_dropout": c.activation_dropout,
            "scale_embedding": c.scale_embedding, "pad_token_id": c.pad_token_id,
            "eos_token_id": c.eos_token_id,
            "decoder_start_token_id": c.decoder_start_token_id,
            "forced_bos_token_id": c.forced_bos_token_id, "forced_eos_token_id": c.forced_eos_token_id,
            "is_encoder_decoder": True, "tie_word_embeddings": True,
        }
        if head:
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(c.num_labels)}
        return config, weights

    def handles(self, model: Any) -> bool:
        return isinstance(model, BART)
