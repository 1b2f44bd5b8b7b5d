"""Hugging Face ``model_type: bart`` checkpoints <-> the modkit BART."""
from __future__ import annotations

from typing import Any

import torch

from modkit.errors import ArtifactError

from .bart import BARTOptions
from .bart_model import BART

_ATTN = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
# the token embedding's other names in transformers' files (all tied to `shared`)
_EMBED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                  "lm_head.weight")


def _block_names(ours: str, theirs: str, cross: bool) -> dict[str, str]:
    names = {}
    parts = [("attn", "self_attn")] + ([("cross", "encoder_attn")] if cross else [])
    for role, hf in parts:
        for p, hp in _ATTN.items():
            for t in ("weight", "bias"):
                names[f"{ours}.{role}.{p}.{t}"] = f"{theirs}.{hf}.{hp}.{t}"
        for t in ("weight", "bias"):
            names[f"{ours}.{role}_norm.{t}"] = f"{theirs}.{hf}_layer_norm.{t}"
    for t in ("weight", "bias"):
        names[f"{ours}.ffn.up.{t}"] = f"{theirs}.fc1.{t}"
        names[f"{ours}.ffn.down.{t}"] = f"{theirs}.fc2.{t}"
        names[f"{ours}.ffn_norm.{t}"] = f"{theirs}.final_layer_norm.{t}"
    return names


def weight_names(model: BART) -> dict[str, str]:
    """modkit parameter name -> transformers name (without the ``model.`` prefix)."""
    names = {"embed.weight": "shared.weight"}
    for side in ("encoder", "decoder"):
        names[f"{side}_positions.weight"] = f"{side}.embed_positions.weight"
        for t in ("weight", "bias"):
            names[f"{side}_embed_norm.{t}"] = f"{side}.layernorm_embedding.{t}"
        for i in range(len(getattr(model, f"{side}_blocks"))):
            names.update(_block_names(f"{side}_blocks.{i}", f"{side}.layers.{i}", side == "decoder"))
    if model.classification_head is not None:
        for t in ("weight", "bias"):
            for layer in ("dense", "out_proj"):
                names[f"classification_head.{layer}.{t}"] = f"classification_head.{layer}.{t}"
    return names


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


class BartFormat:
    def from_hf(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> BART:
        original = {k.removeprefix("model."): k for k in weights}  # to name unknowns as the file does
        weights = {k.removeprefix("model."): v for k, v in weights.items()}
        embed = next((weights[k] for k in _EMBED_ALIASES if k in weights), None)
        if embed is None:
            raise ArtifactError("bart: the checkpoint has no token embedding (model.shared.weight)")
        head = weights.get("classification_head.out_proj.weight")
        model = BART(options_from_config(config, 0 if head is None else head.shape[0]))
        theirs = {hf: ours for ours, hf in weight_names(model).items()}
        state = {"embed.weight": embed}
        if "final_logits_bias" in weights:
            state["final_logits_bias"] = weights["final_logits_bias"].reshape(-1)
        unknown = []
        for name, tensor in weights.items():
            if name in theirs:
                state[theirs[name]] = tensor
            elif name not in _EMBED_ALIASES and name != "final_logits_bias":
                unknown.append(original[name])
        if unknown:
            raise ArtifactError(f"bart: unrecognised weights in the checkpoint: {', '.join(sorted(unknown))}")
        missing = sorted(set(theirs.values()) - set(state))
        if missing:
            raise ArtifactError(f"bart: weights missing from the checkpoint: {', '.join(missing)}")
        model.load_state_dict(state, strict=False)  # final_logits_bias may be absent: stays zero
        return model.eval()

    def to_hf(self, model: BART) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        c = model.config
        if c.layer_norm_eps != HF_LAYER_NORM_EPS:  # a folder transformers would compute differently
            raise ArtifactError(f"bart: layer_norm_eps = {c.layer_norm_eps:g} cannot be written to a Hugging Face "
                                f"folder: transformers' BART has no such setting and always uses "
                                f"{HF_LAYER_NORM_EPS:g}; build with layer_norm_eps = {HF_LAYER_NORM_EPS:g} to export it")
        state = model.state_dict()
        weights = {f"model.{hf}": state[ours] for ours, hf in weight_names(model).items()}
        weights = {k.replace("model.classification_head", "classification_head"): v
                   for k, v in weights.items()}
        weights["final_logits_bias"] = state["final_logits_bias"][None]
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
