"""BERT Hugging Face checkpoints (``model_type = "bert"``) in and out.

The head is read from ``architectures`` (``BertForMaskedLM``...), or guessed from the weight
names when the config has none. Older checkpoints name LayerNorm parameters gamma/beta; they
are read as weight/bias.
"""
from __future__ import annotations

import re

import torch

from modkit.nn.blocks import ACTIVATIONS
from modkit.builder.checkpoints import HFWeights, assign_state
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


def _layer_names(i: int) -> list[tuple[str, str]]:
    m, h = f"blocks.{i}.", f"encoder.layer.{i}."
    pairs = [("attn.q", "attention.self.query"), ("attn.k", "attention.self.key"),
             ("attn.v", "attention.self.value"), ("attn.o", "attention.output.dense"),
             ("attn_norm", "attention.output.LayerNorm"), ("ffn.up", "intermediate.dense"),
             ("ffn.down", "output.dense"), ("ffn_norm", "output.LayerNorm")]
    return [(m + ours + p, h + theirs + p) for ours, theirs in pairs for p in (".weight", ".bias")]


def _names(o: BERTOptions) -> list[tuple[str, str]]:
    """(modkit name, Hugging Face name without the ``bert.`` prefix) of the backbone."""
    names = [("embed.weight", "embeddings.word_embeddings.weight"),
             ("token_types.weight", "embeddings.token_type_embeddings.weight"),
             ("positions.weight", "embeddings.position_embeddings.weight"),
             ("embed_norm.weight", "embeddings.LayerNorm.weight"),
             ("embed_norm.bias", "embeddings.LayerNorm.bias")]
    for i in range(o.n_layers):
        names += _layer_names(i)
    if o.pooler:
        names += [("pooler.weight", "pooler.dense.weight"), ("pooler.bias", "pooler.dense.bias")]
    if o.mlm_head:
        names += [("mlm_head.dense.weight", "cls.predictions.transform.dense.weight"),
                  ("mlm_head.dense.bias", "cls.predictions.transform.dense.bias"),
                  ("mlm_head.norm.weight", "cls.predictions.transform.LayerNorm.weight"),
                  ("mlm_head.norm.bias", "cls.predictions.transform.LayerNorm.bias"),
                  ("mlm_head.bias", "cls.predictions.bias")]
    return names


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


class BertFormat:
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
        prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
        w = HFWeights(weights, ignore=_IGNORED, source="bert checkpoint")
        if config.get("tie_word_embeddings", True) is False and "cls.predictions.decoder.weight" in w:
            raise ArtifactError("bert checkpoint: an untied MLM decoder is not supported")
        state = {ours: w.take(theirs if theirs.startswith("cls.") else prefix + theirs)
                 for ours, theirs in _names(options)}
        head_state = {}
        if kind in ("nsp", "pretraining"):
            head_state = {f"nsp.{p}": w.take(f"cls.seq_relationship.{p}") for p in ("weight", "bias")}
        elif kind in ("sequence", "token"):
            head_state = {f"classifier.{p}": w.take(f"classifier.{p}") for p in ("weight", "bias")}
        w.check_all_taken()
        if kind is None:
            return assign_state(lambda: BERT(options), state, "bert checkpoint")
        # transformers: classifier_dropout unless it is None (0.0 included), else hidden_dropout_prob
        dropout = options.dropout if config.get("classifier_dropout") is None else config["classifier_dropout"]
        state = {**{f"backbone.{k}": v for k, v in state.items()}, **head_state}
        return assign_state(lambda: BertWithHead(BERT(options), kind, num_labels=_num_labels(config),
                                                 dropout=dropout), state, "bert checkpoint")

    def handles(self, model) -> bool:
        return isinstance(model, (BERT, BertWithHead))

    def with_head(self, backbone: BERT, head: dict):
        """BertForSequenceClassification / ForTokenClassification / ForMaskedLM from a modkit
        objective's head (see Objective.hf_head), or None where BERT's classes differ."""
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
        prefix = "bert." if kind else ""
        state = backbone.state_dict()
        weights = {(theirs if theirs.startswith("cls.") else prefix + theirs): state[ours]
                   for ours, theirs in _names(o) if kind in ("mlm", "pretraining") or not ours.startswith("mlm_head.")}
        if kind in ("nsp", "pretraining"):
            weights.update({f"cls.seq_relationship.{p}": getattr(model.nsp, p) for p in ("weight", "bias")})
        elif kind in ("sequence", "token"):
            weights.update({f"classifier.{p}": getattr(model.classifier, p) for p in ("weight", "bias")})
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
