"""BERT Hugging Face checkpoints (``model_type = "bert"``) in and out.

The head is read from ``architectures`` (``BertForMaskedLM``...), or guessed from the weight
names when the config has none. Older checkpoints name LayerNorm parameters gamma/beta; they
are read as weight/bias.
"""
from __future__ import annotations

import re

import torch

from modkit.nn.blocks import ACTIVATIONS
from modkit.builder.hf.convert import assign_state
from modkit.builder.hf.weight_table import Row, WeightTable
from modkit.interfaces import CheckpointFormat
from modkit.errors import ArtifactError

from .bert import BERTOptions
from .bert_model import BERT, BertWithHead

ARCHITECTURES = {
    "BertModel": None, "BertForMaskedLM": "mlm", "BertForPreTraining": "pretraining",
    "BertForNextSentencePrediction": "nsp", "BertForSequenceClassification": "sequence",
    "BertForTokenClassification": "token",
}
_CLASS_OF = {kind: arch for arch, kind in ARCHITECTURES.items()}
# no weights of their own: buffers, and the decoder that is a copy of the word embeddings
_IGNORED = (r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"^cls\.predictions\.decoder\.(weight|bias)$")


def _rows() -> list[Row]:
    rows = [Row("embed.weight", "embeddings.word_embeddings.weight"),
            Row("token_types.weight", "embeddings.token_type_embeddings.weight"),
            Row("positions.weight", "embeddings.position_embeddings.weight"),
            Row("pooler.weight", "pooler.dense.weight"), Row("pooler.bias", "pooler.dense.bias"),
            Row("mlm_head.bias", "cls.predictions.bias")]
    layers = [("attn.q", "attention.self.query"), ("attn.k", "attention.self.key"),
              ("attn.v", "attention.self.value"), ("attn.o", "attention.output.dense"),
              ("attn_norm", "attention.output.LayerNorm"), ("ffn.up", "intermediate.dense"),
              ("ffn.down", "output.dense"), ("ffn_norm", "output.LayerNorm")]
    others = [("embed_norm", "embeddings.LayerNorm"), ("mlm_head.dense", "cls.predictions.transform.dense"),
              ("mlm_head.norm", "cls.predictions.transform.LayerNorm"), ("nsp", "cls.seq_relationship"),
              ("classifier", "classifier")]
    for p in ("weight", "bias"):
        rows += [Row(f"blocks.{{i}}.{ours}.{p}", f"encoder.layer.{{i}}.{theirs}.{p}") for ours, theirs in layers]
        rows += [Row(f"{ours}.{p}", f"{theirs}.{p}") for ours, theirs in others]
    return rows


#: the backbone's weights behind ``bert.`` in a headed checkpoint; the heads' outside it
TABLE = WeightTable(_rows(), ignore=_IGNORED, source="bert checkpoint")
_HEADS = ("cls.", "classifier.")


def _head_kind(config: dict, weights: dict) -> str | None:
    for arch in config.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    mlm = any(k.startswith("cls.predictions.") for k in weights)
    nsp = any(k.startswith("cls.seq_relationship.") for k in weights)
    if mlm or nsp:
        return "pretraining" if mlm and nsp else "mlm" if mlm else "nsp"
    if "classifier.weight" in weights:
        raise ArtifactError("bert checkpoint: a classifier without `architectures` in config.json; "
                            "cannot tell sequence from token classification")
    return None


def _renamed(weights: dict) -> dict:
    """gamma/beta (TF-era LayerNorm names) -> weight/bias."""
    return {re.sub(r"(LayerNorm)\.gamma$", r"\1.weight", re.sub(r"(LayerNorm)\.beta$", r"\1.bias", k)): v
            for k, v in weights.items()}


def _num_labels(config: dict) -> int:
    return len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)


class BertFormat(CheckpointFormat):
    def options(self, config: dict, weights: dict, kind: str | None) -> BERTOptions:
        unsupported = [k for k, default in (("is_decoder", False), ("add_cross_attention", False),
                                            ("position_embedding_type", "absolute"))
                       if config.get(k, default) != default]
        if config.get("hidden_act", "gelu") not in ACTIVATIONS:
            unsupported.append(f"hidden_act={config['hidden_act']!r}")
        if unsupported:
            raise ArtifactError(f"bert checkpoint: unsupported settings: {', '.join(unsupported)}")
        prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
        return BERTOptions(
            vocab_size=config.get("vocab_size", 30522), n_positions=config.get("max_position_embeddings", 512),
            type_vocab_size=config.get("type_vocab_size", 2), d_model=config.get("hidden_size", 768),
            n_layers=config.get("num_hidden_layers", 12), n_heads=config.get("num_attention_heads", 12),
            d_ff=config.get("intermediate_size", 3072), activation=config.get("hidden_act", "gelu"),
            dropout=config.get("hidden_dropout_prob", 0.1),
            attn_dropout=config.get("attention_probs_dropout_prob", 0.1),
            layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            pooler=f"{prefix}pooler.dense.weight" in weights, mlm_head=kind in ("mlm", "pretraining"))

    def from_hf(self, config: dict, weights: dict[str, torch.Tensor]):
        weights = _renamed(weights)
        kind = _head_kind(config, weights)
        options = self.options(config, weights, kind)
        if config.get("tie_word_embeddings", True) is False and "cls.predictions.decoder.weight" in weights:
            raise ArtifactError("bert checkpoint: an untied MLM decoder is not supported")
        state = TABLE.from_hf(weights, prefix="bert.")
        if kind is None:
            return assign_state(lambda: BERT(options), state, "bert checkpoint")
        # transformers: classifier_dropout unless it is None (0.0 included), else hidden_dropout_prob
        dropout = options.dropout if config.get("classifier_dropout") is None else config["classifier_dropout"]
        state = {(k if k.startswith(("nsp.", "classifier.")) else f"backbone.{k}"): v for k, v in state.items()}
        return assign_state(lambda: BertWithHead(BERT(options), kind, num_labels=_num_labels(config),
                                                 dropout=dropout), state, "bert checkpoint")

    def handles(self, model) -> bool:
        return isinstance(model, (BERT, BertWithHead))

    def with_head(self, backbone: BERT, head: dict):
        """BertForSequenceClassification / ForTokenClassification / ForMaskedLM from a modkit
        objective's head (see ObjectiveExport.hf_head), or None where BERT's classes differ."""
        if head["kind"] == "masked-lm":
            return BertWithHead(backbone, "mlm") if backbone.mlm_head is not None else None
        kind = {"sequence-classification": "sequence", "token-classification": "token"}.get(head["kind"])
        pooling = {"sequence": "pooler", "token": None}.get(kind)
        if kind is None or head.get("pooling") != pooling or (kind == "sequence" and backbone.pooler is None):
            return None  # transformers' BERT classifies the pooled [CLS] state only
        model = BertWithHead(backbone, kind, num_labels=len(head["labels"]), dropout=head.get("dropout", 0.1))
        with torch.no_grad():
            model.classifier.weight.copy_(head["weight"])
            model.classifier.bias.copy_(head["bias"])
        model.labels = list(head["labels"])
        return model.eval()

    def to_hf(self, model) -> tuple[dict, dict[str, torch.Tensor]]:
        with_head = isinstance(model, BertWithHead)
        backbone = model.backbone if with_head else model
        # a bare backbone that has its MLM head is written as BertForMaskedLM, keeping the head
        kind = model.kind if with_head else "mlm" if backbone.mlm_head is not None else None
        o = backbone.config
        state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items()}
        if kind not in ("mlm", "pretraining"):  # BertModel / a classifier has no MLM head
            state = {k: v for k, v in state.items() if not k.startswith("mlm_head.")}
        weights = TABLE.to_hf(state, prefix="bert." if kind else "", keep=_HEADS)
        config = {
            "model_type": "bert", "architectures": [_CLASS_OF[kind]], "vocab_size": o.vocab_size,
            "hidden_size": o.d_model, "num_hidden_layers": o.n_layers, "num_attention_heads": o.n_heads,
            "intermediate_size": o.d_ff or 4 * o.d_model, "hidden_act": o.activation,
            "hidden_dropout_prob": o.dropout,
            "attention_probs_dropout_prob": o.dropout if o.attn_dropout is None else o.attn_dropout,
            "max_position_embeddings": o.n_positions, "type_vocab_size": o.type_vocab_size,
            "layer_norm_eps": o.layer_norm_eps, "tie_word_embeddings": True,
        }
        if with_head and model.classifier is not None:
            n = model.classifier.out_features
            labels = getattr(model, "labels", None) or [f"LABEL_{i}" for i in range(n)]
            config["id2label"] = {str(i): label for i, label in enumerate(labels)}
            config["label2id"] = {label: i for i, label in enumerate(labels)}
            config["classifier_dropout"] = model.dropout.p
        return config, {k: v.detach().contiguous() for k, v in weights.items()}
