"""GPT-1 (``openai-gpt``) and GPT-2 (``gpt2``) Hugging Face checkpoints in and out.

transformers stores GPT projections as ``Conv1D`` (weight ``(in, out)``, the transpose of
nn.Linear's) and fuses the query, key and value projections into one ``c_attn``; the map
below transposes and splits them on the way in, and joins them on the way out.
"""
from __future__ import annotations

import torch

from modkit.nn.blocks import ACTIVATIONS
from modkit.builder.hf.convert import assign_state
from modkit.builder.hf.weight_table import Row, WeightTable
from modkit.interfaces import CheckpointFormat
from modkit.errors import ArtifactError

from .gpt import GPTOptions
from .gpt_model import GPT, GPTLMHeadModel

# names that hold no weights: the causal-mask buffers older transformers saved
_BUFFERS = (r"(^|\.)attn\.(masked_)?bias$", r"(^|\.)position_ids$")
# GPT-1's "gelu" is the tanh approximation (transformers' gelu_new)
_GPT1_ACT_IN = {"gelu": "gelu_new", "relu": "relu", "silu": "silu", "swish": "silu"}
_GPT1_ACT_OUT = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu", "silu": "silu"}


def _table(tok: str, pos: str, source: str) -> WeightTable:
    """GPT-1 and GPT-2 differ only in their embeddings' names (and GPT-2's final LayerNorm)."""
    rows = [Row("embed.weight", f"{tok}.weight"), Row("positions.weight", f"{pos}.weight"),
            Row("final_norm.weight", "ln_f.weight"), Row("final_norm.bias", "ln_f.bias"),
            Row("lm_head.weight", "lm_head.weight"),
            # one fused (in, 3 * out) Conv1D <-> three (out, in) linears
            Row(tuple(f"blocks.{{i}}.attn.{r}.weight" for r in "qkv"), "h.{i}.attn.c_attn.weight",
                transpose=True, dim=1),
            Row(tuple(f"blocks.{{i}}.attn.{r}.bias" for r in "qkv"), "h.{i}.attn.c_attn.bias")]
    for ours, theirs, conv in [("attn_norm", "ln_1", False), ("attn.o", "attn.c_proj", True),
                               ("ffn_norm", "ln_2", False), ("ffn.up", "mlp.c_fc", True),
                               ("ffn.down", "mlp.c_proj", True)]:
        rows += [Row(f"blocks.{{i}}.{ours}.weight", f"h.{{i}}.{theirs}.weight", transpose=conv),
                 Row(f"blocks.{{i}}.{ours}.bias", f"h.{{i}}.{theirs}.bias")]
    return WeightTable(rows, ignore=_BUFFERS, source=source)


class _GPTFormat(CheckpointFormat):
    model_type: str
    variant: str
    embed_names: tuple[str, str]  # token, position embedding names in the checkpoint
    base_class: str
    head_class: str

    # --- options <-> config.json -------------------------------------------------------
    def options(self, config: dict) -> GPTOptions:
        raise NotImplementedError

    def config(self, options: GPTOptions) -> dict:
        raise NotImplementedError

    # --- weights -----------------------------------------------------------------------
    @property
    def table(self) -> WeightTable:
        return _table(*self.embed_names, source=f"{self.model_type} checkpoint")

    def from_hf(self, config: dict, weights: dict[str, torch.Tensor]):
        options = self.options(config)
        with_head = "lm_head.weight" in weights or any(
            a == self.head_class for a in config.get("architectures") or [])
        if not with_head and not options.tie_embeddings:
            # a bare model (GPT2Model) has no head to untie: tie_word_embeddings=false in its
            # config.json says nothing about its weights
            options = options.model_copy(update={"tie_embeddings": True})
        if options.tie_embeddings:  # a copy of the token embedding, when the file keeps one
            weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
        state = self.table.from_hf(weights, prefix="transformer.")
        backbone = assign_state(lambda: GPT(options), state, f"{self.model_type} checkpoint")
        return GPTLMHeadModel(backbone) if with_head else backbone

    def handles(self, model) -> bool:
        backbone = model.backbone if isinstance(model, GPTLMHeadModel) else model
        return isinstance(backbone, GPT) and backbone.config.variant == self.variant

    def with_head(self, backbone: GPT, head: dict):
        """*LMHeadModel for a language model. transformers' GPT sequence classifiers have no
        bias and read the last non-pad token, so a modkit classifier has no exact counterpart."""
        return GPTLMHeadModel(backbone) if head["kind"] == "causal-lm" else None

    def to_hf(self, model) -> tuple[dict, dict[str, torch.Tensor]]:
        with_head = isinstance(model, GPTLMHeadModel)
        backbone = model.backbone if with_head else model
        options = backbone.config
        if not options.tie_embeddings and not with_head:
            raise ArtifactError("an untied GPT LM head is only written with the model's head "
                                "(GPTLMHeadModel)")
        weights = self.table.to_hf(backbone.state_dict(), prefix="transformer." if with_head else "",
                                   keep=("lm_head.",))
        config = self.config(options)
        config["architectures"] = [self.head_class if with_head else self.base_class]
        config["tie_word_embeddings"] = options.tie_embeddings
        return config, weights


def _dropouts(config: dict) -> dict:
    return {"dropout": config.get("resid_pdrop", 0.1), "embd_dropout": config.get("embd_pdrop", 0.1),
            "attn_dropout": config.get("attn_pdrop", 0.1)}


def _dropouts_out(o: GPTOptions) -> dict:
    pick = lambda v: o.dropout if v is None else v  # noqa: E731
    return {"resid_pdrop": o.dropout, "embd_pdrop": pick(o.embd_dropout), "attn_pdrop": pick(o.attn_dropout)}


class GPT2Format(_GPTFormat):
    model_type, variant = "gpt2", "gpt2"
    embed_names = ("wte", "wpe")
    base_class, head_class = "GPT2Model", "GPT2LMHeadModel"

    def options(self, config: dict) -> GPTOptions:
        unsupported = [k for k, default in (("scale_attn_by_inverse_layer_idx", False),
                                            ("scale_attn_weights", True), ("add_cross_attention", False))
                       if config.get(k, default) != default]
        activation = config.get("activation_function", "gelu_new")
        if activation not in ACTIVATIONS:
            unsupported.append(f"activation_function={activation!r}")
        if unsupported:
            raise ArtifactError(f"gpt2 checkpoint: unsupported settings: {', '.join(unsupported)}")
        return GPTOptions(
            variant="gpt2", vocab_size=config.get("vocab_size", 50257),
            n_positions=config.get("n_positions", 1024), d_model=config.get("n_embd", 768),
            n_layers=config.get("n_layer", 12), n_heads=config.get("n_head", 12),
            d_ff=config.get("n_inner"), activation=activation,
            layer_norm_eps=config.get("layer_norm_epsilon", 1e-5),
            tie_embeddings=config.get("tie_word_embeddings", True), **_dropouts(config))

    def config(self, o: GPTOptions) -> dict:
        return {"model_type": "gpt2", "vocab_size": o.vocab_size, "n_positions": o.n_positions,
                "n_embd": o.d_model, "n_layer": o.n_layers, "n_head": o.n_heads, "n_inner": o.d_ff,
                "activation_function": o.activation, "layer_norm_epsilon": o.layer_norm_eps,
                **_dropouts_out(o)}


class OpenAIGPTFormat(_GPTFormat):
    model_type, variant = "openai-gpt", "gpt1"
    embed_names = ("tokens_embed", "positions_embed")
    base_class, head_class = "OpenAIGPTModel", "OpenAIGPTLMHeadModel"

    def options(self, config: dict) -> GPTOptions:
        afn = config.get("afn", "gelu")
        if afn not in _GPT1_ACT_IN:
            raise ArtifactError(f"openai-gpt checkpoint: unsupported afn {afn!r}")
        return GPTOptions(
            variant="gpt1", vocab_size=config.get("vocab_size", 40478),
            n_positions=config.get("n_positions", 512), d_model=config.get("n_embd", 768),
            n_layers=config.get("n_layer", 12), n_heads=config.get("n_head", 12),
            activation=_GPT1_ACT_IN[afn], layer_norm_eps=config.get("layer_norm_epsilon", 1e-5),
            tie_embeddings=config.get("tie_word_embeddings", True), **_dropouts(config))

    def config(self, o: GPTOptions) -> dict:
        if o.d_ff not in (None, 4 * o.d_model) or o.activation not in _GPT1_ACT_OUT:
            raise ArtifactError("openai-gpt checkpoints need d_ff = 4 * d_model and a gelu_new, relu "
                                f"or silu activation (got d_ff={o.d_ff}, activation={o.activation!r})")
        return {"model_type": "openai-gpt", "vocab_size": o.vocab_size, "n_positions": o.n_positions,
                "n_embd": o.d_model, "n_layer": o.n_layers, "n_head": o.n_heads,
                "afn": _GPT1_ACT_OUT[o.activation], "layer_norm_epsilon": o.layer_norm_eps,
                **_dropouts_out(o)}
