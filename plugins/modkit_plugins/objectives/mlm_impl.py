"""Masked LM: random windows of the tokenized text, [CLS] window [SEP], BERT's masking.

The text is read through a token file with word-start marks (:mod:`.textfiles`): tokenized
once into memory maps, so a corpus larger than memory trains with flat resident memory.

The vocabulary head is the backbone's own ``lm_logits`` (BERT's MLM head, tied to the input
embeddings, which Hugging Face ``BertForMaskedLM`` checkpoints load into and export from); an
encoder without one gets a linear head here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modkit.errors import UserError
from modkit.interfaces import Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader
from modkit.tokenfile import windows as token_windows

from .masking import IGNORE, mask_tokens
from .textfiles import word_start_file
from .records import FillMaskRecord


@dataclass
class MaskedText:
    train: np.ndarray  # (N,) ids: slices of a memory-mapped token file
    train_starts: np.ndarray  # (N,) uint8: 1 where the token begins a word (its marks)
    heldout: np.ndarray
    heldout_starts: np.ndarray
    width: int  # text tokens per window


def template_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Special ids the tokenizer's single-text template puts before and after the text."""
    if tokenizer.template is None:
        return [], []
    pieces = [p for p, _ in tokenizer.template.single]
    cut = pieces.index("$A")
    return ([tokenizer.token_to_id(p) for p in pieces[:cut]], [tokenizer.token_to_id(p) for p in pieces[cut + 1:]])


class MaskedLMReader(ObjectiveReader):
    reads = "text"

    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        self.mask_id = tokenizer.special_id("mask")
        if self.mask_id is None:
            raise UserError("mlm needs a tokenizer with a 'mask' special token (WordPiece's [MASK])")
        self.pad_id = tokenizer.special_id("pad") or 0
        self.prefix, self.suffix = template_ids(tokenizer)
        specials = {tokenizer.token_to_id(t) for t in tokenizer.special_tokens.values()}
        self.random_ids = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in specials])

    def load_data(self, path, seq_len):
        width = seq_len - len(self.prefix) - len(self.suffix)
        tokens = word_start_file(self.tokenizer, path)
        ids, starts = tokens.ids, tokens.marks
        cut = int(len(ids) * (1 - self.options.holdout))
        if cut < width + 1:
            raise UserError(f"{path}: {cut} training tokens, fewer than a window of {width + 1}")
        return MaskedText(ids[:cut], starts[:cut], ids[cut:], starts[cut:], width)

    def windows(self, ids: np.ndarray, starts: np.ndarray, begin: list[int], width: int):
        """Windows at ``begin`` wrapped in the template: (ids, word starts), each (B, T); only
        these windows are read from the maps."""
        rows = torch.from_numpy(token_windows(ids, begin, width))
        row_starts = torch.from_numpy(token_windows(starts, begin, width).astype(bool))
        row_starts[:, 0] = True  # a window's first token begins its first (maybe cut) word
        n = len(begin)
        wrap = lambda pre, mid, post: torch.cat([pre.expand(n, -1), mid, post.expand(n, -1)], 1)  # noqa: E731
        full = wrap(torch.tensor([self.prefix], dtype=torch.long).reshape(1, -1), rows,
                    torch.tensor([self.suffix], dtype=torch.long).reshape(1, -1))
        return full, wrap(torch.ones(1, len(self.prefix), dtype=torch.bool), row_starts,
                          torch.ones(1, len(self.suffix), dtype=torch.bool))

    def corrupt(self, ids: torch.Tensor, starts: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A training batch from clean windows: masked input_ids, labels, attention_mask."""
        o = self.options
        maskable = torch.ones_like(ids, dtype=torch.bool)
        maskable[:, : len(self.prefix)] = False
        maskable[:, ids.shape[1] - len(self.suffix):] = False
        inputs, labels = mask_tokens(ids, maskable, probability=o.mlm_probability, mask_rate=o.mask_replace_prob,
                                     random_rate=o.random_replace_prob, mask_id=self.mask_id,
                                     random_ids=self.random_ids, generator=generator,
                                     word_start=starts if o.whole_word_mask else None)
        return {"input_ids": inputs, "attention_mask": torch.ones_like(ids), "labels": labels, "original_ids": ids}

    def batch(self, data, batch_size, generator):
        begin = torch.randint(0, len(data.train) - data.width + 1, (batch_size,), generator=generator).tolist()
        ids, starts = self.windows(data.train, data.train_starts, begin, data.width)
        return self.corrupt(ids, starts, generator)

    def eval_batches(self, data, batch_size, limit):
        """Consecutive held-back windows, masked with a fixed seed (the same at every evaluation)."""
        n = min(limit, len(data.heldout) // data.width)
        generator = torch.Generator().manual_seed(0)
        batches = []
        for first in range(0, n, batch_size):
            begin = [k * data.width for k in range(first, min(n, first + batch_size))]
            batches.append(self.corrupt(*self.windows(data.heldout, data.heldout_starts, begin, data.width), generator))
        return batches

    def export_inputs(self, data):
        src, starts = (data.heldout, data.heldout_starts) if len(data.heldout) > data.width else (data.train, data.train_starts)
        ids, row_starts = self.windows(src, starts, [0, min(len(src) - data.width, data.width)], data.width)
        batch = self.corrupt(ids, row_starts, torch.Generator().manual_seed(0))
        mask = batch["attention_mask"]
        mask[1, ids.shape[1] * 3 // 4:] = 0  # one padded row, so the check covers masking
        return {"input_ids": batch["input_ids"], "attention_mask": mask}


class MaskedLMHead(nn.Module, ObjectiveHead):
    """The backbone's own vocabulary head, or a linear one where it has none."""

    def __init__(self, options, backbone, reader):
        super().__init__()
        self.options, self.reader = options, reader
        self.head = None if self._has_lm_head(backbone) else nn.Linear(backbone.d_model, backbone.vocab_size)

    @staticmethod
    def _has_lm_head(backbone) -> bool:
        try:
            backbone.lm_logits(torch.zeros(1, backbone.d_model))
        except NotImplementedError:
            return False
        return True

    def vocab_logits(self, backbone, hidden: torch.Tensor) -> torch.Tensor:
        return backbone.lm_logits(hidden) if self.head is None else self.head(hidden)

    def loss(self, backbone, batch):
        out = backbone(batch["input_ids"], batch["attention_mask"])
        chosen = batch["labels"] != IGNORE
        logits = self.vocab_logits(backbone, out.last_hidden_state[chosen])  # only where predicted
        targets = batch["labels"][chosen]
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.options.label_smoothing) if len(targets) else logits.sum() * 0
        accuracy = (logits.argmax(-1) == targets).float().mean() if len(targets) else logits.new_zeros(())
        return loss, {"mlm_loss": loss.detach(), "mlm_accuracy": accuracy.detach()}

    @torch.no_grad()
    def evaluate(self, backbone, data):
        n = min(64, len(data.heldout) // data.width)
        if n == 0:
            return {}
        reader = self.reader
        ids, starts = reader.windows(data.heldout, data.heldout_starts, [k * data.width for k in range(n)], data.width)
        _, figures = self.loss(backbone, reader.corrupt(ids, starts, torch.Generator().manual_seed(0)))
        return {"heldout_" + k: float(v) for k, v in figures.items() if not k.endswith("loss")}  # the loss: eval_loss

    def logits(self, backbone, output, attention_mask):
        return self.vocab_logits(backbone, output.last_hidden_state)


class MaskedLMExport(ObjectiveExport):
    def hf_head(self, backbone):
        return {"kind": "masked-lm"} if self.head.head is None else None

    def task_record(self, seq_len):
        return FillMaskRecord(task=self.task, mask_token_id=self.reader.mask_id, pad_token_id=self.reader.pad_id,
                          top_k=self.options.top_k, max_length=seq_len)


class MaskedLM(Objective):
    task = "fill-mask"
    perplexity = True
    Reader, Head, Export = MaskedLMReader, MaskedLMHead, MaskedLMExport

    @classmethod
    def check_backbone(cls, backbone):
        if getattr(backbone, "is_decoder", False) or getattr(backbone, "is_encoder_decoder", False):
            raise UserError(f"mlm needs an encoder (it sees both sides of each mask); {type(backbone).__name__} is not one")
