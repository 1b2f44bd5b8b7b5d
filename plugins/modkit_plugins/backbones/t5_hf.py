"""Hugging Face ``model_type: t5`` checkpoints <-> the modkit T5."""
from __future__ import annotations

from typing import Any

import torch

from modkit.errors import ArtifactError

from .t5 import T5Options
from .t5_model import T5

_EMBED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _ffn_names(ours: str, theirs: str, gated: bool) -> dict[str, str]:
    if gated:  # v1.1: wi_0 goes through the activation, wi_1 is the linear branch
        return {f"{ours}.gate.weight": f"{theirs}.wi_0.weight", f"{ours}.up.weight": f"{theirs}.wi_1.weight",
                f"{ours}.down.weight": f"{theirs}.wo.weight"}
    return {f"{ours}.up.weight": f"{theirs}.wi.weight", f"{ours}.down.weight": f"{theirs}.wo.weight"}


def weight_names(model: T5) -> dict[str, str]:
    """modkit parameter name -> transformers name."""
    names = {"embed.weight": "shared.weight"}
    gated = model.encoder_blocks[0].ffn.gate is not None
    for side in ("encoder", "decoder"):
        names[f"{side}_bias.embedding.weight"] = f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        names[f"{side}_norm.weight"] = f"{side}.final_layer_norm.weight"
        for i in range(len(getattr(model, f"{side}_blocks"))):
            ours, theirs = f"{side}_blocks.{i}", f"{side}.block.{i}.layer"
            sublayers = [("attn", "SelfAttention")] + ([("cross", "EncDecAttention")] if side == "decoder" else [])
            for n, (role, hf) in enumerate(sublayers):
                for p in "qkvo":
                    names[f"{ours}.{role}.{p}.weight"] = f"{theirs}.{n}.{hf}.{p}.weight"
                names[f"{ours}.{role}_norm.weight"] = f"{theirs}.{n}.layer_norm.weight"
            n = len(sublayers)
            names.update(_ffn_names(f"{ours}.ffn", f"{theirs}.{n}.DenseReluDense", gated))
            names[f"{ours}.ffn_norm.weight"] = f"{theirs}.{n}.layer_norm.weight"
    if model.lm_head is not None:
        names["lm_head.weight"] = "lm_head.weight"
    return names


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


class T5Format:
    def from_hf(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> T5:
        embed = next((weights[k] for k in _EMBED_ALIASES if k in weights), None)
        if embed is None:
            raise ArtifactError("t5: the checkpoint has no token embedding (shared.weight)")
        head = weights.get("lm_head.weight")
        tied = head is None or torch.equal(head, embed)
        try:
            model = T5(options_from_config(config, tied))
        except ValueError as e:
            raise ArtifactError(str(e)) from None
        theirs = {hf: ours for ours, hf in weight_names(model).items()}
        state = {"embed.weight": embed}
        unknown = []
        for name, tensor in weights.items():
            if name in theirs:
                state[theirs[name]] = tensor
            elif name not in _EMBED_ALIASES and not (tied and name == "lm_head.weight"):
                unknown.append(name)
        if unknown:
            raise ArtifactError(f"t5: unrecognised weights in the checkpoint: {', '.join(sorted(unknown))}")
        missing = sorted(set(theirs.values()) - set(state))
        if missing:
            raise ArtifactError(f"t5: weights missing from the checkpoint: {', '.join(missing)}")
        model.load_state_dict(state)
        return model.eval()

    def to_hf(self, model: T5) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        c = model.config
        state = model.state_dict()
        weights = {hf: state[ours] for ours, hf in weight_names(model).items()}
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
