"""Export an encoder-decoder to ``encoder.onnx`` + ``decoder.onnx`` and check parity.

The model must meet :class:`modkit.interfaces.EncoderDecoder` (``encode``, ``cross_kv``,
``decode_step`` and its cache layout); it need not be built from :mod:`modkit.nn.blocks`.
Graph inputs and outputs are described in :mod:`modkit.runtime.seq2seq`, which runs them
without torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from modkit.builder.export.onnx import onnx_export
from modkit.nn.generation import generate_seq2seq
from modkit.runtime import make_session
from modkit.runtime.seq2seq import Seq2SeqSession

OPSET = 17


class EncoderGraph(nn.Module):
    """input_ids, attention_mask -> encoder hidden states and every layer's cross keys/values."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.model.encode(input_ids, attention_mask)
        cross = [t for kv in self.model.cross_kv(hidden) for t in kv]
        return (hidden, *cross)


class DecoderGraph(nn.Module):
    """One cached decoder step: new tokens + past/cross keys/values -> logits, present keys/values."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, attention_mask, *kv):
        n = len(kv) // 4  # kv: every layer's past key, value, then every layer's cross key, value
        past = [((kv[2 * i], kv[2 * i + 1]), (kv[2 * n + 2 * i], kv[2 * n + 2 * i + 1])) for i in range(n)]
        logits, cache = self.model.decode_step(decoder_input_ids, None, attention_mask, past)
        return (logits, *[t for self_kv, _ in cache for t in self_kv])


def _names(prefix: str, n_layers: int) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


def export_graphs(model: nn.Module, out_dir: str | Path, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, *, opset: int = OPSET, optimize: str = "none") -> tuple[Path, Path]:
    """Write encoder.onnx and decoder.onnx (dynamic batch and lengths) to ``out_dir``."""
    out_dir = Path(out_dir)
    with torch.no_grad():
        encoded = EncoderGraph(model)(input_ids, attention_mask)
        cross = list(encoded[1:])
        start = torch.zeros((input_ids.shape[0], 1), dtype=torch.long)
        # trace with a past of length 1; the axis is dynamic, and the first real step passes 0
        _, cache = model.decode_step(start, encoded[0], attention_mask, None)
        past = [t for self_kv, _ in cache for t in self_kv]
    n = len(past) // 2
    past_names, cross_names, present_names = _names("past", n), _names("cross", n), _names("present", n)
    # the encoder's output may be longer than the source (an input prompt's virtual tokens first)
    batch, src, encoded_axes = {0: "batch"}, {0: "batch", 1: "source"}, {0: "batch", 1: "encoded"}
    kv_axes = lambda length: {0: "batch", 2: length}  # noqa: E731 - (B, H, T, Dh)
    encoder = onnx_export(
        EncoderGraph(model), (input_ids, attention_mask), out_dir / "encoder.onnx", opset=opset, optimize=optimize,
        input_names=["input_ids", "attention_mask"], output_names=["encoder_hidden_states", *cross_names],
        dynamic_axes={"input_ids": src, "attention_mask": src, "encoder_hidden_states": encoded_axes,
                      **{name: kv_axes("encoded") for name in cross_names}})
    decoder = onnx_export(
        DecoderGraph(model), (start, attention_mask, *past, *cross), out_dir / "decoder.onnx", opset=opset,
        optimize=optimize,
        input_names=["decoder_input_ids", "attention_mask", *past_names, *cross_names],
        output_names=["logits", *present_names],
        dynamic_axes={"decoder_input_ids": {0: "batch", 1: "new"}, "attention_mask": src,
                      "logits": batch, **{name: kv_axes("past") for name in past_names},
                      **{name: kv_axes("encoded") for name in cross_names},
                      **{name: kv_axes("total") for name in present_names}})
    return encoder, decoder


def export_seq2seq(
    model: nn.Module,
    out_dir: str | Path,
    sample_inputs: dict[str, torch.Tensor],
    *,
    max_new_tokens: int = 16,
    decoder_start_token_id: int | None = None,
    eos_token_id: int | None = None,
    opset: int = OPSET,
    optimize: str = "none",
) -> dict[str, Any]:
    """Export both graphs (optimised at level ``optimize``), then compare onnxruntime with torch on ``sample_inputs``
    (``input_ids``, ``attention_mask``): the encoder output, the logits of every greedy step,
    and the greedy tokens. Returns the parity figures for the manifest.

    Token ids default to the model's config.
    """
    cfg = model.config
    start = cfg.decoder_start_token_id if decoder_start_token_id is None else decoder_start_token_id
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    ids, mask = sample_inputs["input_ids"], sample_inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    # the exporter sets each graph's mode back afterwards, so the wrappers are created in eval
    # mode; the model's own mode is restored at the end
    was_training = model.training
    model.eval()
    try:
        return _export_and_compare(model, out_dir, ids, mask, max_new_tokens, start, eos, opset, optimize)
    finally:
        model.train(was_training)


def _export_and_compare(model, out_dir, ids, mask, max_new_tokens, start, eos, opset, optimize) -> dict[str, Any]:
    encoder_path, decoder_path = export_graphs(model, out_dir, ids, mask, opset=opset, optimize=optimize)

    session = Seq2SeqSession(make_session(encoder_path, "cpu"), make_session(decoder_path, "cpu"))
    onnx_tokens, onnx_logits = session.greedy(ids.numpy(), mask.numpy(), max_new_tokens=max_new_tokens,
                                              decoder_start_token_id=start, eos_token_id=eos)
    with torch.no_grad():
        encoded = model.encode(ids, mask)
        # plain greedy, as the runtime decodes: none of the forced tokens a model's config may ask for
        torch_tokens = generate_seq2seq(model, ids, mask, max_new_tokens=max_new_tokens, decoder_start_token_id=start,
                                        eos_token_id=eos, pad_token_id=eos)[:, 1:]
        # torch's logits along the tokens onnxruntime chose, so each step compares like with like
        prefix = torch.cat([torch.full((ids.shape[0], 1), start), torch.from_numpy(onnx_tokens)], 1)
        torch_logits = model(ids, mask, prefix[:, :len(onnx_logits)]).logits
    onnx_encoded = session.encoder.run(["encoder_hidden_states"], {"input_ids": ids.numpy(),
                                                                   "attention_mask": mask.numpy()})[0]
    logit_diff = max(float(abs(torch_logits[:, i].numpy() - step).max()) for i, step in enumerate(onnx_logits))
    return {
        "files": [encoder_path.name, decoder_path.name],
        "opset": opset,
        "encoder_max_abs_diff": float(abs(encoded.numpy() - onnx_encoded).max()),
        "decoder_logits_max_abs_diff": logit_diff,
        "greedy_tokens_equal": onnx_tokens.shape == tuple(torch_tokens.shape)
        and bool((onnx_tokens == torch_tokens.numpy()).all()),
        "greedy_steps": len(onnx_logits),
    }
