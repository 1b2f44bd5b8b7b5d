"""Backbone contract: outputs, padding invariance, causality, the cache, export parity."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modkit.interfaces import CachedDecoder, EncoderDecoder, capabilities_of
from modkit.nn.blocks import iter_roles

ATOL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = ATOL) -> None:
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    assert a.shape == b.shape and diff <= atol, f"{what} (shapes {tuple(a.shape)} vs {tuple(b.shape)}, max diff {diff:.3g})"


def _hidden(backbone, ids, mask=None, decoder_ids=None, **extra) -> torch.Tensor:
    """What padding must not change: an encoder-decoder's logits for fixed decoder inputs, any
    other backbone's last hidden state."""
    if getattr(backbone, "is_encoder_decoder", False):
        return backbone(ids, mask, decoder_input_ids=decoder_ids, **extra).logits
    return backbone(ids, mask, **extra).last_hidden_state


def _check_outputs(backbone, ids, mask) -> None:
    seq2seq = getattr(backbone, "is_encoder_decoder", False)
    out = backbone(ids, mask, decoder_input_ids=ids, output_hidden_states=True) if seq2seq \
        else backbone(ids, mask, output_hidden_states=True)
    assert out.last_hidden_state.shape == (*ids.shape, backbone.d_model), "last_hidden_state shape"
    hidden = out.decoder_hidden_states if seq2seq else out.hidden_states
    assert hidden and torch.equal(hidden[-1], out.last_hidden_state), "the last hidden state must be last_hidden_state"
    roles = {role for _, _, role in iter_roles(backbone)}
    assert {"attn.q", "attn.k", "attn.v", "attn.o"} <= roles, f"missing attention roles (has {sorted(roles)})"


def _check_capabilities(backbone, ids: torch.Tensor) -> None:
    """What the backbone declares (:class:`~modkit.interfaces.BackboneCapabilities`) holds: every
    declared input is taken (``inputs_embeds`` of ``embed_tokens(ids)`` give what ``ids`` give),
    the token embedding is an embedding of the vocabulary, a sequence of ``max_positions`` tokens
    runs, one block class is found, an encoder-decoder says which token its decoder starts from."""
    caps, name = capabilities_of(backbone), type(backbone).__name__
    seq2seq = getattr(backbone, "is_encoder_decoder", False)
    if caps.token_embedding is not None:
        embedding = getattr(backbone, caps.token_embedding, None)
        assert isinstance(embedding, nn.Embedding) and embedding.num_embeddings >= backbone.vocab_size, \
            f"{name}: token_embedding {caps.token_embedding!r} is not an nn.Embedding of the vocabulary"
    if caps.takes("inputs_embeds"):
        embeds = backbone.embed_tokens(ids)
        if seq2seq:
            got, want = backbone(None, decoder_input_ids=ids, inputs_embeds=embeds).logits, \
                backbone(ids, decoder_input_ids=ids).logits
        else:
            got, want = backbone(None, inputs_embeds=embeds).last_hidden_state, backbone(ids).last_hidden_state
        _close(got, want, f"{name}: inputs_embeds=embed_tokens(ids) differ from input_ids (inputs_embeds declared)")
    dec = ids if seq2seq else None
    if caps.takes("position_ids"):
        counted = torch.arange(ids.shape[1])[None].expand_as(ids)
        _close(_hidden(backbone, ids, decoder_ids=dec, position_ids=counted), _hidden(backbone, ids, decoder_ids=dec),
               f"{name}: position_ids declared, but 0..T-1 give other outputs than none")
    if caps.takes("token_type_ids"):  # a segment embedding, or (GPT) the token embedding: values may differ
        out = _hidden(backbone, ids, decoder_ids=dec, token_type_ids=torch.zeros_like(ids))
        assert out.shape == _hidden(backbone, ids, decoder_ids=dec).shape, f"{name}: token_type_ids declared, not taken"
    if caps.max_positions is not None:
        longest = torch.randint(0, backbone.vocab_size, (1, caps.max_positions))
        out = backbone.encode(longest) if seq2seq else backbone(longest).last_hidden_state
        assert out.shape[1] == caps.max_positions, f"{name}: max_positions {caps.max_positions} tokens do not run"
    if caps.block is not None:
        assert any(isinstance(m, caps.block) for m in backbone.modules()), \
            f"{name}: declares block {caps.block.__name__}, but has no such module"
    if seq2seq:
        assert caps.decoder_start is not None, \
            f"{name}: an encoder-decoder declares decoder_start (a special-token role)"


def _check_padding(backbone, ids: torch.Tensor, pad: int) -> None:
    """Right padding never changes real positions; left padding neither (with ``position_ids``
    counting real tokens where ``forward`` takes them). Pad ids are random tokens, so a
    backbone that ignores ``attention_mask`` fails."""
    b, t = ids.shape
    seq2seq = getattr(backbone, "is_encoder_decoder", False)
    fill = torch.randint(0, backbone.vocab_size, (b, pad))
    dec = ids[:, : t - 1] if seq2seq else None
    ones = torch.ones_like(ids)
    plain = _hidden(backbone, ids, ones, dec)
    right = _hidden(backbone, torch.cat([ids, fill], 1), torch.cat([ones, 0 * fill], 1), dec)
    _close(right if seq2seq else right[:, :t], plain, "right padding changes the outputs at real positions "
           "(is attention_mask honoured?)")
    if seq2seq:
        return  # the source's learned absolute positions cannot be shifted through encode()
    mask = torch.cat([0 * fill, ones], 1)
    extra = {}
    if capabilities_of(backbone).takes("position_ids"):
        extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    left = _hidden(backbone, torch.cat([fill, ids], 1), mask, **extra)
    _close(left[:, pad:], plain, "left padding changes the outputs at real positions (is attention_mask honoured?)")


def _check_causal(backbone, ids: torch.Tensor, at: int) -> None:
    """Changing the tokens from ``at`` on leaves every earlier position as it was."""
    changed = ids.clone()
    changed[:, at:] = (ids[:, at:] + 1) % backbone.vocab_size
    if getattr(backbone, "is_encoder_decoder", False):
        a, b = backbone(ids, decoder_input_ids=ids).logits, backbone(ids, decoder_input_ids=changed).logits
    else:
        a, b = backbone(ids).last_hidden_state, backbone(changed).last_hidden_state
    _close(b[:, :at], a[:, :at], f"not causal: changing tokens from position {at} on changes earlier positions")


def _check_cache_layout(cache, n_expected: int, batch: int, cross: bool) -> None:
    assert isinstance(cache, (list, tuple)) and len(cache) > 0, "the cache must be a list with one entry per layer"
    for i, layer in enumerate(cache):
        self_kv, cross_kv = layer
        k, v = self_kv
        assert k.ndim == 4 and k.shape[0] == batch and k.shape[2] == n_expected and k.shape == v.shape, \
            f"cache layer {i}: self keys/values must be (batch, heads, {n_expected}, head_dim), got {tuple(k.shape)}"
        assert (cross_kv is not None) == cross, f"cache layer {i}: the cross-attention slot must be " \
            + ("(keys, values)" if cross else "None for a decoder-only backbone")


def _check_cached_steps(backbone, ids: torch.Tensor, split: int) -> None:
    """A prefix pass with use_cache, then one token at a time, gives the full pass's states."""
    assert isinstance(backbone, CachedDecoder), "a decoder-only backbone must meet modkit.interfaces.CachedDecoder"
    b, t = ids.shape
    full = backbone(ids, torch.ones_like(ids)).last_hidden_state
    out = backbone(ids[:, :split], torch.ones(b, split, dtype=torch.long), use_cache=True)
    _check_cache_layout(out.past_key_values, split, b, cross=False)
    states, cache = [out.last_hidden_state], out.past_key_values
    for i in range(split, t):
        out = backbone(ids[:, i: i + 1], torch.ones(b, i + 1, dtype=torch.long), past_key_values=cache, use_cache=True)
        states.append(out.last_hidden_state)
        cache = out.past_key_values
    _check_cache_layout(cache, t, b, cross=False)
    _close(torch.cat(states, 1), full, "cached steps differ from the full pass (is past_key_values used?)")


def _check_decode_steps(backbone, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """decode_step one token at a time gives forward's teacher-forced logits; the first step
    computes the cross keys/values cross_kv gives."""
    assert isinstance(backbone, EncoderDecoder), "an encoder-decoder must meet modkit.interfaces.EncoderDecoder"
    dec = ids[:, :4]
    full = backbone(ids, mask, decoder_input_ids=dec).logits
    encoded = backbone.encode(ids, mask)
    logits, cache = backbone.decode_step(dec[:, :1], encoded, mask, None)
    _check_cache_layout(cache, 1, ids.shape[0], cross=True)
    for (_, cross_kv), (k, v) in zip(cache, backbone.cross_kv(encoded)):
        _close(cross_kv[0], k, "cross_kv keys differ from the cached cross keys")
        _close(cross_kv[1], v, "cross_kv values differ from the cached cross values")
    steps = [logits]
    for i in range(1, dec.shape[1]):
        logits, cache = backbone.decode_step(dec[:, i: i + 1], None, mask, cache)
        steps.append(logits)
    _close(torch.stack(steps, 1), full, "decode_step differs from forward's teacher-forced logits", atol=1e-4)


class _HiddenGraph(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids, attention_mask):
        return self.backbone(input_ids, attention_mask).last_hidden_state


def _check_export(backbone, ids: torch.Tensor, mask: torch.Tensor, tolerance: float) -> None:
    """The backbone traces to ONNX and onnxruntime computes what torch does: the plain forward,
    and the cached step graph (decoders) or the encoder/decoder pair (encoder-decoders)."""
    from modkit.builder.export.onnx import onnx_export
    from modkit.builder.export.cached import check_with_past, export_with_past
    from modkit.builder.export.seq2seq import export_seq2seq
    from modkit.runtime import make_session

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "hidden": {0: "batch", 1: "sequence"}}
        path = onnx_export(_HiddenGraph(backbone), (ids, mask), folder / "hidden.onnx", opset=17,
                           input_names=["input_ids", "attention_mask"], output_names=["hidden"], dynamic_axes=axes)
        got = make_session(path, "cpu").run(["hidden"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        want = _HiddenGraph(backbone)(ids, mask).numpy()
        real = mask.numpy().astype(bool)
        diff = float(np.abs(got - want)[real].max())
        assert diff <= tolerance, f"ONNX forward differs from torch by {diff:.3g}"
        if getattr(backbone, "is_encoder_decoder", False):
            figures = export_seq2seq(backbone, folder, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=6)
            worst = max(figures["encoder_max_abs_diff"], figures["decoder_logits_max_abs_diff"])
            assert figures["greedy_tokens_equal"] and worst <= tolerance, f"ONNX encoder/decoder pair: {figures}"
        elif getattr(backbone, "is_decoder", False):
            path = export_with_past(backbone, folder)
            check_with_past(backbone, path, ids[0, :5].tolist(), max_new_tokens=6, tolerance=tolerance)


def check_backbone(backbone, *, batch: int = 2, length: int = 8, seed: int = 0, export: bool = True,
                   tolerance: float = 1e-4) -> None:
    """Shapes, hidden states and role names; the declared capabilities; right and left padding
    invariance; causality
    and cached steps == the full pass for decoders (:class:`~modkit.interfaces.CachedDecoder`);
    ``decode_step`` == ``forward`` for encoder-decoders
    (:class:`~modkit.interfaces.EncoderDecoder`); a safetensors round trip; and (``export``)
    ONNX graphs that onnxruntime runs with torch's results and greedy tokens."""
    torch.manual_seed(seed)
    backbone.eval()
    ids = torch.randint(0, backbone.vocab_size, (batch, length))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        _check_outputs(backbone, ids, mask)
        _check_capabilities(backbone, ids)
        _check_padding(backbone, ids, pad=3)
        if getattr(backbone, "is_decoder", False):
            _check_causal(backbone, ids, at=length // 2)
        if getattr(backbone, "is_encoder_decoder", False):
            _check_decode_steps(backbone, ids, mask)
        elif getattr(backbone, "is_decoder", False):
            _check_cached_steps(backbone, ids, split=length // 2)
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "w.safetensors")
            save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, path)
            state = load_file(path)
        assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items()), "safetensors round trip"
        if export:
            padded = mask.clone()
            padded[-1, length - 2:] = 0  # one right-padded row: the graph must mask too
            _check_export(backbone, ids, padded, tolerance)
