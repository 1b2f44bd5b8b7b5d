"""Span corruption on an encoder-decoder: random windows of the tokenized text, noise spans
replaced by sentinels in the input and spelled out after them in the target.

Sentinels are the tokenizer's ``<extra_id_0>``, ``<extra_id_1>``... when it has them, else the
ids counted down from the end of the backbone's vocabulary (T5's ``extra_ids``).

The text is read through a token file (:mod:`.textfiles`, the one clm reads): tokenized once
into a memory map, so a corpus larger than memory trains with flat resident memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modkit.data import device_of, pad_batch
from modkit.errors import UserError

from .sentinels import decode_with_sentinels
from .seq2seq_impl import IGNORE, Seq2Seq, Seq2SeqExport, Seq2SeqHead, Seq2SeqReader
from .spans import corrupt, input_and_target_lengths, random_spans_noise_mask, span_lengths
from .textfiles import ids_file
from .records import Seq2SeqRecord


@dataclass
class TokenStream:
    train: np.ndarray  # (N,) ids: slices of a memory-mapped token file
    heldout: np.ndarray
    width: int  # raw tokens per window


class SpanCorruptionReader(Seq2SeqReader):
    reads = "text"

    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        self.vocab_end = backbone.vocab_size
        self.named_sentinels = tokenizer.token_to_id("<extra_id_0>") is not None

    def sentinel(self, k: int) -> int:
        if self.named_sentinels:
            found = self.tokenizer.token_to_id(f"<extra_id_{k}>")
            if found is None:
                raise UserError(f"span-corruption needs sentinel <extra_id_{k}>, which the tokenizer lacks")
            return found
        return self.vocab_end - 1 - k

    def load_data(self, path, seq_len):
        o = self.options
        width, _ = input_and_target_lengths(seq_len, o.noise_density, o.mean_noise_span_length)
        spans = span_lengths(width, o.noise_density, o.mean_noise_span_length)[1]
        if not self.named_sentinels and self.vocab_end - spans - 1 < self.tokenizer.vocab_size:
            raise UserError(f"span-corruption needs {spans + 1} sentinel ids past the tokenizer's {self.tokenizer.vocab_size} "
                            f"tokens; the backbone's vocab_size is {self.vocab_end} (set extra_ids or vocab_size)")
        ids = ids_file(self.tokenizer, path).ids
        cut = int(len(ids) * (1 - o.holdout))
        if cut < width + 1:
            raise UserError(f"{path}: {cut} training tokens, fewer than a window of {width + 1}")
        return TokenStream(ids[:cut], ids[cut:], width)

    def corrupt_windows(self, windows: list[list[int]], generator: torch.Generator) -> dict[str, torch.Tensor]:
        o = self.options
        pairs = [corrupt(w, random_spans_noise_mask(len(w), o.noise_density, o.mean_noise_span_length, generator),
                         self.sentinel, self.eos) for w in windows]
        sources, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        labels = pad_batch(targets, IGNORE)[0]
        input_ids, attention_mask = pad_batch(sources, self.pad)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "decoder_input_ids": pad_batch([[self.start] + t[:-1] for t in targets], self.pad)[0],
                "decoder_attention_mask": (labels != IGNORE).long(), "labels": labels,
                "original_ids": pad_batch(windows, self.pad)[0],  # before corruption, for modkit preview
                "original_attention_mask": pad_batch([[1] * len(w) for w in windows], 0)[0]}

    def batch(self, data, batch_size, generator):
        starts = torch.randint(0, len(data.train) - data.width + 1, (batch_size,), generator=generator).tolist()
        return self.corrupt_windows([data.train[s: s + data.width].tolist() for s in starts], generator)

    def load_eval_data(self, path, seq_len):
        data = self.load_data(path, seq_len)
        return TokenStream(data.train[:0], ids_file(self.tokenizer, path).ids, data.width)

    @staticmethod
    def _heldout_windows(data: TokenStream, limit: int) -> list[list[int]]:
        n = min(limit, len(data.heldout) // data.width)
        return [data.heldout[k * data.width: (k + 1) * data.width].tolist() for k in range(n)]

    def eval_batches(self, data, batch_size, limit):
        windows = self._heldout_windows(data, limit)
        generator = torch.Generator().manual_seed(0)  # the same corruption at every evaluation
        return [self.corrupt_windows(windows[i: i + batch_size], generator) for i in range(0, len(windows), batch_size)]

    def export_inputs(self, data):
        src = data.heldout if len(data.heldout) >= data.width else data.train
        batch = self.corrupt_windows([src[: data.width].tolist(), src[-data.width:].tolist()], torch.Generator().manual_seed(0))
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def decode(self, ids) -> str:
        """Text of ids, sentinels included (``modkit preview`` shows it)."""
        return decode_with_sentinels(self.tokenizer, ids, self.sentinel_base)

    @property
    def sentinel_base(self) -> int | None:
        """The id of ``<extra_id_0>`` when sentinels lie past the tokenizer's vocabulary."""
        return None if self.named_sentinels else self.vocab_end - 1


class SpanCorruptionHead(Seq2SeqHead):
    def loss(self, backbone, batch):
        return super().loss(backbone, {k: v for k, v in batch.items() if not k.startswith("original_")})

    @torch.no_grad()
    def evaluate(self, backbone, data):
        windows = self.reader._heldout_windows(data, 32)
        if not windows:
            return {}
        batch = self.reader.corrupt_windows(windows, torch.Generator().manual_seed(0))
        _, figures = self.loss(backbone, {k: v.to(device_of(backbone)) for k, v in batch.items()})
        return {"heldout_" + k: float(v) for k, v in figures.items() if not k.endswith("loss")}  # the loss: eval_loss


class SpanCorruptionExport(Seq2SeqExport):
    def task_record(self, seq_len):
        return Seq2SeqRecord(**{**super().task_record(seq_len).as_dict(), "sentinel_base": self.reader.sentinel_base})


class SpanCorruption(Seq2Seq):
    Reader, Head, Export = SpanCorruptionReader, SpanCorruptionHead, SpanCorruptionExport

    @classmethod
    def check_backbone(cls, backbone):
        super().check_backbone(backbone)
        if not hasattr(backbone.config, "extra_ids"):
            raise UserError(f"span-corruption needs sentinel ids, which a t5 backbone reserves (extra_ids); "
                            f"a {type(backbone).__name__} has none: use backbone t5")
        if not backbone.config.extra_ids:
            raise UserError("span-corruption needs sentinel ids, and the backbone's extra_ids is 0: write "
                            "extra_ids = 100 under [backbone] (T5's count; the default), or leave extra_ids out")
