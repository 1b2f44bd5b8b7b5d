"""Causal LM: random windows of the tokenized text; predict each next token.

The text is read through a token file (modkit.tokenfile): tokenized once into a
memory-mapped array, so a corpus larger than memory trains with flat resident memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pathlib import Path

from modkit.errors import UserError
from modkit.interfaces import CachedDecoder, Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader
from modkit.nn.losses import lm_loss
from modkit.tokenfile import CHUNK_BYTES, print_progress, token_file, windows

from .records import GenerateRecord


@dataclass
class TokenStream:
    train: np.ndarray  # (N,) ids: slices of a memory-mapped token file
    heldout: np.ndarray
    seq_len: int


def _windows(ids: np.ndarray, starts, length: int) -> torch.Tensor:
    return torch.from_numpy(windows(ids, starts, length))


def _show_progress(path) -> bool:
    return Path(path).stat().st_size > 4 * CHUNK_BYTES


class CausalLMReader(ObjectiveReader):
    reads = "text"

    def _ids(self, path) -> np.ndarray:
        progress = print_progress(f"tokenizing {Path(path).name}") if _show_progress(path) else None
        return token_file(self.tokenizer, path, progress=progress).ids

    def load_data(self, path, seq_len):
        ids = self._ids(path)
        cut = int(len(ids) * (1 - self.options.holdout))
        if cut < seq_len + 2:
            raise UserError(f"{path}: {cut} training tokens, fewer than seq_len + 2 = {seq_len + 2}")
        return TokenStream(ids[:cut], ids[cut:], seq_len)

    def load_eval_data(self, path, seq_len):
        ids = self._ids(path)
        if len(ids) < seq_len:
            raise UserError(f"{path}: {len(ids)} tokens, fewer than seq_len = {seq_len} for one evaluation window")
        return TokenStream(ids[:0], ids, seq_len)

    def eval_batches(self, data, batch_size, limit):
        """Consecutive held-back windows, from the start."""
        n = min(len(data.heldout) // data.seq_len, limit)
        if n == 0:
            return []
        windows = _windows(data.heldout, range(0, n * data.seq_len, data.seq_len), data.seq_len)
        return [{"input_ids": windows[i: i + batch_size]} for i in range(0, n, batch_size)]

    def batch(self, data, batch_size, generator):
        starts = torch.randint(0, len(data.train) - data.seq_len, (batch_size,), generator=generator)
        return {"input_ids": _windows(data.train, starts.tolist(), data.seq_len)}

    def export_inputs(self, data):
        src = data.heldout if len(data.heldout) >= 16 else data.train
        n = min(len(src) // 2, data.seq_len)
        ids = _windows(src, [0, n], n)
        mask = torch.ones_like(ids)
        mask[1, n * 3 // 4:] = 0  # one padded row, so the check covers masking
        return {"input_ids": ids, "attention_mask": mask}


class CausalLMHead(nn.Module, ObjectiveHead):
    def __init__(self, options, backbone, reader):
        super().__init__()
        self.options = options

    def loss(self, backbone, batch):
        out = backbone(batch["input_ids"])
        loss = lm_loss(backbone, out.last_hidden_state, batch["input_ids"], label_smoothing=self.options.label_smoothing)
        return loss, {"lm_loss": loss.detach()}

    def logits(self, backbone, output, attention_mask):
        return backbone.lm_logits(output.last_hidden_state)


class CausalLMExport(ObjectiveExport):
    def graphs(self, model, exporter, inputs):
        """model.onnx, plus the cached step graph the generate task decodes with."""
        figures = exporter.logits_graph(model, inputs)
        prompt = inputs["input_ids"][0][inputs["attention_mask"][0].bool()][:8].tolist()
        return {**figures, **exporter.cached_decoder(model.backbone, prompt)}

    def hf_head(self, backbone):
        return {"kind": "causal-lm"}

    def task_record(self, seq_len):
        return GenerateRecord(task=self.task, eos_token_id=self.reader.tokenizer.special_id("eos"))


class CausalLM(Objective):
    task = "generate"
    perplexity = True
    Reader, Head, Export = CausalLMReader, CausalLMHead, CausalLMExport

    @classmethod
    def check_backbone(cls, backbone):
        if not getattr(backbone, "is_decoder", False) or getattr(backbone, "is_encoder_decoder", False) \
                or not isinstance(backbone, CachedDecoder):
            raise UserError(f"clm needs a decoder-only backbone that caches its keys and values (gpt, say); "
                            f"{type(backbone).__name__} is not one (use seq2seq for encoder-decoders)")
