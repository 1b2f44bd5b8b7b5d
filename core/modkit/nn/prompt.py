"""The input-side PEFT slot: virtual tokens before a backbone's input (prompt tuning).

A PEFT method puts a module in the slot with :func:`attach_prompt`: ``module.length`` is the
number of virtual tokens P and ``module()`` their embeddings (P, D), in the space of
:meth:`modkit.interfaces.Backbone.embed_tokens`. The backbone must declare ``inputs_embeds``
(:class:`modkit.interfaces.BackboneCapabilities`); nothing else of it changes. What the core
does with the slot, as Hugging Face PEFT's prompt tuning does, by kind of backbone:

- an encoder (not ``is_decoder``, BERT): the P embeddings go before the tokens', the mask gets
  P ones in front, given ``position_ids`` / ``token_type_ids`` get 0..P-1 / zeros in front (the
  tokens' positions shift by P). The outputs' first P positions are dropped from
  ``last_hidden_state`` and ``hidden_states``, so heads and objectives see the T tokens they
  gave; what the backbone computed over the whole sequence stays as it is (``attentions``
  cover P + T positions; BERT's pooler reads position 0: the first virtual token, as in
  Hugging Face);
- a decoder (``is_decoder``, a :class:`~modkit.interfaces.CachedDecoder`): the virtual tokens
  come first and see nothing after them, so their keys and values are those of one pass over
  the P embeddings; they go in front of the cache (the mask gets P ones, given
  ``position_ids`` shift by P) and leave the returned cache again. Callers, cached steps and the
  exported ``model_with_past.onnx`` see the cache of their own tokens, as without a prompt;
- an encoder-decoder (:class:`modkit.nn.encoder_decoder.EncoderDecoderModel`): the encoder reads
  the P embeddings first and its output keeps them (the decoder cross-attends them, as in Hugging
  Face); every source mask the decoder reads gets P ones in front.

Either way the tokens take positions P.. of the backbone's ``max_positions``:
:func:`reserved_positions` counts them, and the build checks ``seq_len`` plus them.
"""
from __future__ import annotations

import torch
from torch import nn

from modkit.errors import UserError
from modkit.interfaces import capabilities_of

SLOT = "input_prompt"  # the backbone attribute holding the module


def prompt_of(backbone: nn.Module) -> nn.Module | None:
    """The module in ``backbone``'s input slot, or None."""
    return getattr(backbone, SLOT, None)


def reserved_positions(backbone: nn.Module) -> int:
    """Positions before the tokens' own: the input prompt's, or the longest attention prefix
    that holds positions (prefix tuning as Hugging Face PEFT's)."""
    prompt = prompt_of(backbone)
    prefixes = [getattr(m.prefix, "positions", 0) for m in backbone.modules() if getattr(m, "prefix", None) is not None]
    return (prompt.length if prompt is not None else 0) + max(prefixes, default=0)


def attach_prompt(backbone: nn.Module, module: nn.Module) -> None:
    """Put ``module`` in ``backbone``'s input slot (see the module docstring)."""
    from modkit.nn.encoder_decoder import EncoderDecoderModel

    name = type(backbone).__name__
    caps = capabilities_of(backbone)
    if not caps.takes("inputs_embeds"):
        raise UserError(f"{name} does not declare inputs_embeds (BackboneCapabilities.inputs): virtual tokens need "
                        "a backbone whose forward takes input embeddings")
    if prompt_of(backbone) is not None:
        raise UserError(f"{name} already has an input prompt; one prompt per backbone (merge it before adding another)")
    seq2seq = getattr(backbone, "is_encoder_decoder", False)
    if seq2seq and not isinstance(backbone, EncoderDecoderModel):
        raise UserError(f"{name}: an encoder-decoder takes virtual tokens through modkit.nn.encoder_decoder."
                        "EncoderDecoderModel, which it does not subclass")
    backbone.add_module(SLOT, module)
    if not seq2seq:  # an encoder-decoder's base class reads the slot itself (encode, decode_step)
        decoder = getattr(backbone, "is_decoder", False)
        backbone.register_forward_pre_hook(_decoder_inputs if decoder else _encoder_inputs, with_kwargs=True)
        backbone.register_forward_hook(_decoder_outputs if decoder else _encoder_outputs, with_kwargs=True)


def with_prompt(prompt: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor | None):
    """``(virtual + token embeddings (B, P+T, D), mask (B, P+T) or None)``."""
    b = embeds.shape[0]
    virtual = prompt().to(embeds.dtype)[None].expand(b, -1, -1)
    return torch.cat([virtual, embeds], dim=1), extend_mask(attention_mask, prompt.length)


def extend_mask(attention_mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``n`` ones (always attended) before the mask; None stays None."""
    if attention_mask is None or n == 0:
        return attention_mask
    return torch.cat([attention_mask.new_ones(attention_mask.shape[0], n), attention_mask], dim=1)


def _named(args: tuple, kwargs: dict) -> dict:
    """The call's inputs by name (``forward(input_ids, attention_mask, *, ...)``)."""
    named = dict(kwargs)
    for key, value in zip(("input_ids", "attention_mask"), args):
        named[key] = value
    return named


def _encoder_inputs(backbone, args, kwargs):
    prompt, named = prompt_of(backbone), _named(args, kwargs)
    if prompt is None:
        return None
    p = prompt.length
    embeds = named.get("inputs_embeds")
    embeds = backbone.embed_tokens(named["input_ids"]) if embeds is None else embeds
    named["inputs_embeds"], named["attention_mask"] = with_prompt(prompt, embeds, named.get("attention_mask"))
    named["input_ids"] = None
    if named.get("position_ids") is not None:
        pos = named["position_ids"]
        first = torch.arange(p, device=pos.device, dtype=pos.dtype)[None].expand(pos.shape[0], p)
        named["position_ids"] = torch.cat([first, pos + p], dim=1)
    if named.get("token_type_ids") is not None:
        types = named["token_type_ids"]
        named["token_type_ids"] = torch.cat([types.new_zeros(types.shape[0], p), types], dim=1)
    return (), named


def _encoder_outputs(backbone, args, kwargs, output):
    prompt = prompt_of(backbone)
    if prompt is None:
        return None
    p = prompt.length
    output.last_hidden_state = output.last_hidden_state[:, p:]
    if output.hidden_states is not None:
        output.hidden_states = tuple(h[:, p:] for h in output.hidden_states)
    return output


def prompt_cache(backbone: nn.Module, prompt: nn.Module, batch: int) -> list:
    """Every layer's ``((keys, values), None)`` of the virtual tokens, for ``batch`` rows: one
    pass of the decoder over them (not through the hooks: they are the whole input)."""
    out = backbone.forward(None, inputs_embeds=prompt()[None], use_cache=True)
    return [((k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)), None)
            for (k, v), _ in out.past_key_values]


def _decoder_inputs(backbone, args, kwargs):
    prompt, named = prompt_of(backbone), _named(args, kwargs)
    if prompt is None:
        return None
    p = prompt.length
    tokens = named.get("input_ids") if named.get("input_ids") is not None else named["inputs_embeds"]
    cache = prompt_cache(backbone, prompt, tokens.shape[0])
    past = named.get("past_key_values")
    if past:  # the virtual tokens' keys and values before the caller's cache
        cache = [((torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)), cross)
                 for ((pk, pv), _), ((k, v), cross) in zip(cache, past)]
    named["past_key_values"] = cache
    named["attention_mask"] = extend_mask(named.get("attention_mask"), p)
    if named.get("position_ids") is not None:
        named["position_ids"] = named["position_ids"] + p
    return (), named


def _decoder_outputs(backbone, args, kwargs, output):
    prompt = prompt_of(backbone)
    if prompt is None or not output.past_key_values:
        return None
    p = prompt.length  # the caller's cache holds its own tokens only
    output.past_key_values = [((k[:, :, p:], v[:, :, p:]), cross) for (k, v), cross in output.past_key_values]
    return output
