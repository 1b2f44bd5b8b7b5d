"""Hugging Face ``model_type: t5`` checkpoints <-> the modkit T5."""
from __future__ import annotations

from typing import Any

import torch

from modkit.builder.hf.convert import assign_state
from modkit.builder.hf.weight_table import Row, WeightTable
from modkit.errors import ArtifactError
from modkit.interfaces import CheckpointFormat

from .t5 import T5Options
from .t5_model import T5

def _rows(gated: bool) -> list[Row]:
    rows = [Row("embed.weight", "shared.weight",
                aliases=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")),
            Row("lm_head.weight", "lm_head.weight")]
    for side, layer in (("encoder", "e"), ("decoder", "d")):
        ours, theirs = f"{side}_blocks.{{{layer}}}", f"{side}.block.{{{layer}}}.layer"
        subs = [("attn", "SelfAttention")] + ([("cross", "EncDecAttention")] if side == "decoder" else [])
        ffn = len(subs)  # the feed-forward sublayer's index
        rows += [Row(f"{side}_bias.embedding.weight", f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                 Row(f"{side}_norm.weight", f"{side}.final_layer_norm.weight"),
                 Row(f"{ours}.ffn.down.weight", f"{theirs}.{ffn}.DenseReluDense.wo.weight"),
                 Row(f"{ours}.ffn_norm.weight", f"{theirs}.{ffn}.layer_norm.weight")]
        if gated:  # v1.1: wi_0 goes through the activation, wi_1 is the linear branch
            rows += [Row(f"{ours}.ffn.gate.weight", f"{theirs}.{ffn}.DenseReluDense.wi_0.weight"),
                     Row(f"{ours}.ffn.up.weight", f"{theirs}.{ffn}.DenseReluDense.wi_1.weight")]
        else:
            rows.append(Row(f"{ours}.ffn.up.weight", f"{theirs}.{ffn}.DenseReluDense.wi.weight"))
        for n, (role, hf) in enumerate(subs):
            rows += [Row(f"{ours}.{role}.{p}.weight", f"{theirs}.{n}.{hf}.{p}.weight") for p in "qkvo"]
            rows.append(Row(f"{ours}.{role}_norm.weight", f"{theirs}.{n}.layer_norm.weight"))
    return rows


#: by whether the feed-forward is gated (v1.1) or not (v1.0)
TABLES = {gated: WeightTable(_rows(gated), source="t5 checkpoint") for gated in (False, True)}


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def options_from_config(config: dict[str, Any], tied: bool) -> T5Options:
    # transformers >= 5 writes scale_decoder_outputs; older files say tie_word_embeddings
    rescale = config.get("scale_decoder_outputs", config.get("tie_word_embeddings", True) is not False)
    start = config.get("decoder_start_token_id")
    return T5Options(
        vocab_size=config["vocab_size"], d_model=config.get("d_model", 512), d_kv=config.get("d_kv", 64),
        d_ff=config.get("d_ff", 2048), encoder_layers=config.get("num_layers", 6),
        decoder_layers=config.get("num_decoder_layers") or config.get("num_layers", 6),
        n_heads=config.get("num_heads", 8),
        relative_attention_num_buckets=config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=config.get("relative_attention_max_distance", 128),
        feed_forward_proj=config.get("feed_forward_proj", "relu"), tie_embeddings=tied,
        rescale_output=bool(rescale), dropout=config.get("dropout_rate", 0.1),
        layer_norm_eps=config.get("layer_norm_epsilon", 1e-6),
        pad_token_id=_first(config.get("pad_token_id", 0)), eos_token_id=_first(config.get("eos_token_id", 1)),
        decoder_start_token_id=_first(config.get("pad_token_id", 0)) if start is None else start,
    )


class T5Format(CheckpointFormat):
    def from_hf(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> T5:
        gated = any(".DenseReluDense.wi_0." in k for k in weights)
        state = TABLES[gated].from_hf(weights)
        embed, head = state.get("embed.weight"), state.get("lm_head.weight")
        if embed is None:
            raise ArtifactError("t5: the checkpoint has no token embedding (shared.weight)")
        tied = head is None or torch.equal(head, embed)
        if tied:  # a copy of the embedding, when the file keeps one
            state.pop("lm_head.weight", None)
        try:
            return assign_state(lambda: T5(options_from_config(config, tied)), state, "t5 checkpoint")
        except ValueError as e:  # options the model cannot be built with
            raise ArtifactError(str(e)) from None

    def to_hf(self, model: T5) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        c = model.config
        state = model.state_dict()
        weights = TABLES[model.encoder_blocks[0].ffn.gate is not None].to_hf(state)
        config = {
            "model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
            "vocab_size": c.vocab_size, "d_model": c.d_model, "d_kv": c.d_kv or c.d_model // c.n_heads,
            "d_ff": c.d_ff or 4 * c.d_model, "num_layers": c.encoder_layers,
            "num_decoder_layers": c.decoder_layers, "num_heads": c.n_heads,
            "relative_attention_num_buckets": c.relative_attention_num_buckets,
            "relative_attention_max_distance": c.relative_attention_max_distance,
            "feed_forward_proj": c.feed_forward_proj, "dropout_rate": c.dropout,
            "layer_norm_epsilon": c.layer_norm_eps, "tie_word_embeddings": c.tie_embeddings,
            "scale_decoder_outputs": c.rescale_output, "pad_token_id": c.pad_token_id,
            "eos_token_id": c.eos_token_id, "decoder_start_token_id": c.decoder_start_token_id,
            "is_encoder_decoder": True,
        }
        return config, weights

    def handles(self, model: Any) -> bool:
        return isinstance(model, T5)
