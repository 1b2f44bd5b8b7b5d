"""Denoising on an encoder-decoder, as BART was pretrained: examples of whole consecutive
sentences of a document (documents at blank lines), noised by the enabled functions in the
order permutation, infilling, token masking, token deletion, rotation; the target is always
the original text.

The text is read through a segment file (:mod:`.textfiles`): documents of sentences tokenized
once into memory maps, the examples' sentence ranges computed once beside it, so a corpus
larger than memory trains with flat resident memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from modkit.data import device_of, pad_batch
from modkit.errors import UserError
from modkit.segmentfile import SegmentFile

from .noising import permute_sentences, rotate, text_infilling, token_deletion, token_masking
from .seq2seq_impl import IGNORE, Seq2Seq, Seq2SeqExport, Seq2SeqHead, Seq2SeqReader
from .textfiles import Holdout, sentence_file
from .records import Seq2SeqRecord

DOCUMENTS_AT_ONCE = 4096  # documents per piece of the packing pass


class ExampleList:
    """A list of examples (each: sentences, each: ids) read from a segment file on demand.
    ``ranges`` (E, 2) holds each example's first and past-last sentence; ``index(j)`` maps
    this list's ``j``-th example to a row of it."""

    def __init__(self, text: SegmentFile, ranges: np.ndarray, width: int, rows: list[tuple[str, int]], index):
        self.text, self.ranges, self.width = text, ranges, width
        self._rows, self._index = rows, index  # (part, count) runs: the training then held-back examples

    def __len__(self) -> int:
        return sum(n for _, n in self._rows)

    def __add__(self, other: ExampleList) -> ExampleList:
        return ExampleList(self.text, self.ranges, self.width, self._rows + other._rows, self._index)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(len(self)))]
        for part, n in self._rows:
            if j < n:
                first, end = self.ranges[self._index(part, j)]
                starts = self.text.segments
                return [self.text.tokens.ids[starts[s]: min(starts[s + 1], starts[s] + self.width)].tolist()
                        for s in range(first, end)]
            j -= n
        raise IndexError(j)


@dataclass
class Examples:
    train: ExampleList
    heldout: ExampleList


def packed(text: SegmentFile, width: int) -> Iterator[np.ndarray]:
    """Consecutive sentences of a document grouped into examples of at most ``width`` tokens (a
    longer sentence is cut and stands alone), examples of no tokens left out: (first sentence,
    past-last sentence) per example, flat, a piece of documents at a time."""
    for lo in range(0, text.n_documents, DOCUMENTS_AT_ONCE):
        hi = min(text.n_documents, lo + DOCUMENTS_AT_ONCE)
        base = int(text.documents[lo])
        lengths = np.minimum(np.diff(text.segments[base: int(text.documents[hi]) + 1]), width).tolist()
        bounds = (np.asarray(text.documents[lo: hi + 1]) - base).tolist()
        out: list[int] = []
        for a, b in zip(bounds, bounds[1:]):
            first, size = a, 0
            for s in range(a, b):
                if s > first and size + lengths[s] > width:
                    if size:
                        out += [base + first, base + s]
                    first, size = s, 0
                size += lengths[s]
            if b > first and size:
                out += [base + first, base + b]
        yield np.asarray(out, dtype=np.int64)


class DenoiseReader(Seq2SeqReader):
    reads = "text"

    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        self.mask_id = tokenizer.special_id("mask")
        if self.mask_id is None and (options.text_infilling or options.token_masking):
            raise UserError("denoise: text infilling and token masking need a tokenizer with a 'mask' special token "
                            "(BART's <mask>)")

    def load_data(self, path, seq_len):
        self.max_length = seq_len
        text = sentence_file(self.tokenizer, path)
        width = seq_len - 1
        ranges = text.tokens.derived(f"bart-examples-{width}", np.int64, lambda: packed(text, width)).reshape(-1, 2)
        split = Holdout(len(ranges), self.options.holdout)
        if not split.train:
            raise UserError(f"{path}: no text to denoise")
        return Examples(ExampleList(text, ranges, width, [("train", split.train)], split.index),
                        ExampleList(text, ranges, width, [("held", split.held)], split.index))

    def noise(self, sentences: list[list[int]], generator: torch.Generator) -> list[int]:
        o = self.options
        if o.sentence_permutation:
            sentences = permute_sentences(sentences, o.sentence_permutation, generator)
        tokens = [t for s in sentences for t in s]
        if o.text_infilling:
            tokens, _ = text_infilling(tokens, o.text_infilling, o.poisson_lambda, self.mask_id, generator)
        if o.token_masking:
            tokens = token_masking(tokens, o.token_masking, self.mask_id, generator)
        if o.token_deletion:
            tokens = token_deletion(tokens, o.token_deletion, generator)
        if o.document_rotation and float(torch.rand(1, generator=generator)) < o.document_rotation:
            tokens = rotate(tokens, generator)
        return tokens

    def noised_batch(self, examples: list[list[list[int]]], generator: torch.Generator) -> dict[str, torch.Tensor]:
        originals = [[t for s in e for t in s] for e in examples]
        sources = [self.noise(e, generator)[: self.max_length - 1] + [self.eos] for e in examples]
        targets = [o + [self.eos] for o in originals]
        labels = pad_batch(targets, IGNORE)[0]
        return {"input_ids": pad_batch(sources, self.pad)[0], "attention_mask": pad_batch(sources, self.pad)[1],
                "decoder_input_ids": pad_batch([[self.start] + t[:-1] for t in targets], self.pad)[0],
                "decoder_attention_mask": (labels != IGNORE).long(), "labels": labels,
                "original_ids": pad_batch(originals, self.pad)[0],  # before corruption, for modkit preview
                "original_attention_mask": pad_batch([[1] * len(w) for w in originals], 0)[0]}

    def batch(self, data, batch_size, generator):
        picks = torch.randint(len(data.train), (batch_size,), generator=generator).tolist()
        return self.noised_batch([data.train[i] for i in picks], generator)

    def load_eval_data(self, path, seq_len):
        data = self.load_data(path, seq_len)
        return Examples([], data.train + data.heldout)

    def eval_batches(self, data, batch_size, limit):
        held = data.heldout[:limit]
        generator = torch.Generator().manual_seed(0)  # the same corruption at every evaluation
        return [self.noised_batch(held[i: i + batch_size], generator) for i in range(0, len(held), batch_size)]

    def export_inputs(self, data):
        batch = self.noised_batch((data.heldout or data.train)[:3], torch.Generator().manual_seed(0))
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class DenoiseHead(Seq2SeqHead):
    def loss(self, backbone, batch):
        return super().loss(backbone, {k: v for k, v in batch.items() if not k.startswith("original_")})

    @torch.no_grad()
    def evaluate(self, backbone, data):
        held = data.heldout[: self.options.eval_examples]
        if not held:
            return {}
        batch = self.reader.noised_batch(held, torch.Generator().manual_seed(0))
        _, figures = self.loss(backbone, {k: v.to(device_of(backbone)) for k, v in batch.items()})
        return {"heldout_" + k: float(v) for k, v in figures.items() if not k.endswith("loss")}  # the loss: eval_loss


class DenoiseExport(Seq2SeqExport):
    def task_record(self, seq_len):
        return Seq2SeqRecord(**{**super().task_record(seq_len).as_dict(), "allow_special": True})


class Denoise(Seq2Seq):
    Reader, Head, Export = DenoiseReader, DenoiseHead, DenoiseExport
