"""Prefix tuning (Li & Liang 2021) through the core attention's ``prefix`` slot.

One :class:`PrefixEncoder` (laid out as Hugging Face PEFT's, so its weights map one to one)
holds the prefixes of every chosen attention layer; each layer's slot is a
:class:`PrefixSlot` that reads its own rows. Merging evaluates the encoder once and keeps
only the keys and values, as buffers: the exported graphs carry them as constants. The
prefixes are not part of the KV cache (the core attention adds them after the cache), so
cached generation and beam search need nothing special.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modkit.errors import UserError
from modkit.interfaces import PeftMethod
from modkit.nn.blocks import Attention, Block

ENCODER_ATTRIBUTE = "prefix_encoder"  # where the encoder's weights live on the backbone


class PrefixEncoder(nn.Module):
    """Keys and values of ``n_layers`` layers: an embedding of (length, n_layers*2*inner), or,
    reparameterised, an embedding of (length, d_model) through Linear-Tanh-Linear."""

    def __init__(self, length: int, n_layers: int, inner: int, d_model: int, projection: int):
        super().__init__()
        self.length, self.inner = length, inner
        if projection:
            self.embedding = nn.Embedding(length, d_model)
            self.transform = nn.Sequential(nn.Linear(d_model, projection), nn.Tanh(),
                                           nn.Linear(projection, n_layers * 2 * inner))
        else:
            self.embedding = nn.Embedding(length, n_layers * 2 * inner)
            self.transform = None

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i``'s keys and values, each (length, inner)."""
        rows = slice(i * 2 * self.inner, (i + 1) * 2 * self.inner)
        if self.transform is None:
            kv = self.embedding.weight[:, rows]
        else:  # only this layer's rows of the last projection: the MLP's cost does not grow with depth
            hidden = self.transform[1](self.transform[0](self.embedding.weight))
            last = self.transform[2]
            kv = F.linear(hidden, last.weight[rows], last.bias[rows])
        return kv[:, : self.inner], kv[:, self.inner:]


class PrefixSlot(nn.Module):
    """What an attention's ``prefix`` calls: ``(keys, values)`` of shape (batch, heads, length,
    head_dim), from the encoder while training, from constants once frozen."""

    def __init__(self, encoder: PrefixEncoder, layer: int, n_heads: int, d_head: int, positions: int = 0):
        super().__init__()
        self._encoder = (encoder,)  # a tuple, so the shared encoder is registered once, on the backbone
        self.layer, self.n_heads, self.d_head = layer, n_heads, d_head
        self.positions = positions  # read by the backbone (modkit.nn.blocks.prefix_positions)
        self.register_buffer("key", None)
        self.register_buffer("value", None)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], self.n_heads, self.d_head).transpose(0, 1)  # (H, P, Dh)

    def _kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.key is not None:
            return self.key, self.value
        k, v = self._encoder[0].layer(self.layer)
        return self._heads(k), self._heads(v)

    def forward(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self._kv()
        return k.unsqueeze(0).expand(batch, -1, -1, -1), v.unsqueeze(0).expand(batch, -1, -1, -1)

    @torch.no_grad()
    def freeze(self) -> None:
        """Evaluate the encoder once and keep the keys and values."""
        k, v = self._kv()
        self.key, self.value = k.detach().clone(), v.detach().clone()
        self._encoder = ()


def prefixed_attentions(model: nn.Module, placement: str) -> list[Attention]:
    """The attentions that get a prefix, in module order."""
    if placement == "all":
        return [m for m in model.modules() if isinstance(m, Attention)]
    if getattr(model, "is_encoder_decoder", False):  # as Hugging Face PEFT: the decoder's self-attention
        return [b.attn for b in model.modules() if isinstance(b, Block) and b.cross is not None]
    return [m for m in model.modules() if isinstance(m, Attention) and not m.is_cross]


class PrefixTuning(PeftMethod):
    identity_at_init = False  # trained keys/values change every attention from the start
    merges = False  # merging freezes the prefix to constants; it stays in the graph

    def apply(self, model: nn.Module) -> list[nn.Module]:
        o = self.options
        attentions = prefixed_attentions(model, o.placement)
        if not attentions:
            raise UserError(f"prefix: this backbone has no core attention layers for placement {o.placement!r}")
        if any(a.prefix is not None for a in attentions):
            raise UserError("prefix: these attention layers already have a prefix; one prefix per layer")
        if hasattr(model, ENCODER_ATTRIBUTE):
            raise UserError("prefix: the model already trains a prefix; merge it before adding another")
        inner = {a.n_heads * a.d_head for a in attentions}
        if len(inner) != 1:
            raise UserError(f"prefix: attention layers of different widths {sorted(inner)} cannot share a prefix")
        ref = next(model.parameters())
        encoder = PrefixEncoder(o.length, len(attentions), inner.pop(), getattr(model, "d_model", 0) or
                                attentions[0].q.in_features, o.projection).to(ref.device, ref.dtype)
        model.add_module(ENCODER_ATTRIBUTE, encoder)
        slots = []
        for i, attention in enumerate(attentions):
            attention.prefix = PrefixSlot(encoder, i, attention.n_heads, attention.d_head,
                                          o.length if o.positions == "peft" else 0)
            slots.append(attention.prefix)
        return [encoder, *slots]

    def merge(self, model: nn.Module) -> None:
        """Freeze every slot to its keys/values and drop the encoder (and its MLP)."""
        if not hasattr(model, ENCODER_ATTRIBUTE):
            return
        for m in model.modules():
            if isinstance(m, PrefixSlot) and m._encoder:
                m.freeze()
        delattr(model, ENCODER_ATTRIBUTE)

    @classmethod
    def to_hf_peft(cls, model: nn.Module, hf_weights: dict, hf_config: dict):
        """The prefix as a Hugging Face PEFT PREFIX_TUNING folder: the keys/values (the MLP
        evaluated) as ``prompt_embeddings``, laid out as PEFT's past_key_values."""
        backbone = getattr(model, "backbone", model)
        attentions = [m for m in backbone.modules() if isinstance(m, Attention) and isinstance(m.prefix, PrefixSlot)]
        if not attentions:
            return None
        slots = [a.prefix for a in attentions]
        length = slots[0]._kv()[0].shape[1]
        if attentions != prefixed_attentions(backbone, "peft"):
            raise UserError("prefix: Hugging Face PEFT puts prefixes in every self-attention (an encoder-decoder's "
                            "decoder only); a prefix with placement = \"all\" has no PEFT folder. Train with "
                            "placement = \"peft\" for export-peft, or serve the modkit artifact itself")
        if any(s.positions != length for s in slots):
            raise UserError("prefix: Hugging Face PEFT's PREFIX_TUNING puts the prefix in the KV cache, which "
                            "shifts every token's position by its length; this prefix has no position, so a PEFT "
                            "folder would not compute the same. Train with positions = \"peft\" for export-peft, "
                            "use `lora`, or serve the modkit artifact itself")
        heads = {(s.n_heads, s.d_head) for s in slots}
        (n_heads, d_head), = heads  # one encoder serves every slot: one width
        with torch.no_grad():  # each layer's (keys, values), as (length, 2 * inner) rows
            layers = [torch.cat([x.transpose(0, 1).reshape(length, -1) for x in s._kv()], dim=1) for s in slots]
        seq2seq = bool(hf_config.get("is_encoder_decoder"))
        if seq2seq:
            # PEFT doubles an encoder-decoder's prefix list and hands decoder layer i the entry
            # 2i mod num_layers (the odd ones go to the cross-attention cache, which it drops):
            # with num_layers = 2 x layers, layer i reads entry 2i alone
            zeros = torch.zeros_like(layers[0])
            layers = [x for layer in layers for x in (layer, zeros)]
        architecture = (hf_config.get("architectures") or [""])[0]
        task = ("SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM" if architecture.endswith(("LMHeadModel", "ForCausalLM"))
                else "FEATURE_EXTRACTION")
        config = {"peft_type": "PREFIX_TUNING", "task_type": task, "num_virtual_tokens": length,
                  "token_dim": n_heads * d_head, "num_layers": len(layers), "num_attention_heads": n_heads,
                  "num_transformer_submodules": 2 if seq2seq else 1, "encoder_hidden_size": n_heads * d_head,
                  "prefix_projection": False, "inference_mode": True, "base_model_name_or_path": None}
        return config, {"prompt_embeddings": torch.cat(layers, dim=1).contiguous()}

    @classmethod
    def from_hf_peft(cls, config: dict, weights: dict, model: nn.Module):
        """A Hugging Face PEFT PREFIX_TUNING folder: its saved keys/values (``prompt_embeddings``,
        the MLP already evaluated), in the layers and positions PEFT gives them."""
        from modkit_plugins.peft.prefix import PrefixOptions

        if config.get("peft_type") != "PREFIX_TUNING":
            return None
        kv = weights.get("prompt_embeddings")
        if kv is None:
            raise UserError("PREFIX_TUNING adapter: no prompt_embeddings in adapter_model.safetensors")
        length, hf_layers = int(config["num_virtual_tokens"]), int(config["num_layers"])
        method = cls(PrefixOptions(length=length, projection=0, placement="peft", positions="peft"))
        modules = method.apply(model)
        encoder, slots = modules[0], modules[1:]
        block = 2 * encoder.inner
        if kv.shape != (length, hf_layers * block):
            raise UserError(f"PREFIX_TUNING adapter: prompt_embeddings {tuple(kv.shape)} do not fit {hf_layers} layers "
                            f"of width {encoder.inner} (expected {(length, hf_layers * block)})")
        seq2seq = config.get("num_transformer_submodules") == 2
        if len(slots) > hf_layers:
            raise UserError(f"PREFIX_TUNING adapter: {hf_layers} layers of prefixes for {len(slots)} attention layers")
        with torch.no_grad():
            for i in range(len(slots)):
                # PEFT doubles an encoder-decoder's prefixes and hands each decoder layer four
                # entries of the doubled list: layer i reads the keys/values of entry 2i mod layers
                source = (2 * i) % hf_layers if seq2seq else i
                encoder.embedding.weight[:, i * block:(i + 1) * block] = kv[:, source * block:(source + 1) * block]
        return method, modules
