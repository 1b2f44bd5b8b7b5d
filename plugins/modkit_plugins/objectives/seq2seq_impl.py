"""Seq2seq training: JSONL {"source", "target"} pairs -> teacher-forced cross-entropy.

The encoder reads ``source + eos``; the decoder reads ``start + target`` and is trained to
produce ``target + eos``. The start id is the backbone's ``decoder_start_token_id``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modkit.data import device_of, pad_batch, split_holdout
from modkit.errors import ArtifactError, UserError
from modkit.interfaces import EncoderDecoder, Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader

from .records import Seq2SeqRecord

IGNORE = -100  # label of padding positions, skipped by the loss


@dataclass
class Seq2SeqData:
    sources: list[list[int]]
    targets: list[list[int]]  # each ends with the eos
    heldout: "Seq2SeqData | None" = None  # every k-th pair, kept out of training for evaluate


class Seq2SeqReader(ObjectiveReader):
    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        cfg = backbone.config
        self.eos = tokenizer.special_id("eos")
        self.eos = cfg.eos_token_id if self.eos is None else self.eos
        pad = tokenizer.special_id("pad")
        self.pad = cfg.pad_token_id if pad is None else pad
        self.start = cfg.decoder_start_token_id
        # ids past the tokenizer's vocabulary (T5's sentinels after span corruption) may be generated:
        # the runtime writes them as <extra_id_k>
        vocab_end = getattr(cfg, "vocab_size", 0) or 0
        self.past_vocab_base = vocab_end - 1 if vocab_end > tokenizer.vocab_size else None

    def load_data(self, path: Path, seq_len: int) -> Seq2SeqData:
        opts = self.options
        target_len = opts.max_target_len or seq_len
        sources, targets = [], []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    source, target = row[opts.source_key], row[opts.target_key]
                except (ValueError, KeyError, TypeError):
                    raise ArtifactError(
                        f"{path}:{n}: expected a JSON object with {opts.source_key!r} and "
                        f"{opts.target_key!r}") from None
                sources.append(self.tokenizer.encode(source)[:seq_len - 1] + [self.eos])
                targets.append(self.tokenizer.encode(target)[:target_len - 1] + [self.eos])
        if not sources:
            raise ArtifactError(f"{path}: no examples")
        train, heldout = split_holdout(list(zip(sources, targets)), opts.holdout)
        if not train:
            raise ArtifactError(f"{path}: too few examples to hold some back")
        held = Seq2SeqData([s for s, _ in heldout], [t for _, t in heldout]) if heldout else None
        return Seq2SeqData([s for s, _ in train], [t for _, t in train], held)

    def collate(self, data: Seq2SeqData, index: list[int]) -> dict[str, torch.Tensor]:
        sources = [data.sources[i] for i in index]
        targets = [data.targets[i] for i in index]
        input_ids, attention_mask = pad_batch(sources, self.pad)
        decoder_input_ids, decoder_attention_mask = pad_batch([[self.start] + t[:-1] for t in targets], self.pad)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_attention_mask,
            "labels": pad_batch(targets, IGNORE)[0],
        }

    def load_eval_data(self, path: Path, seq_len: int) -> Seq2SeqData:
        data = self.load_data(path, seq_len)
        held = data.heldout or Seq2SeqData([], [])
        return Seq2SeqData([], [], Seq2SeqData(data.sources + held.sources, data.targets + held.targets))

    def eval_batches(self, data: Seq2SeqData, batch_size: int, limit: int) -> list[dict[str, torch.Tensor]]:
        held = data.heldout
        n = min(limit, len(held.sources)) if held else 0
        return [self.collate(held, list(range(i, min(i + batch_size, n)))) for i in range(0, n, batch_size)]

    def batch(self, data: Seq2SeqData, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(len(data.sources), (batch_size,), generator=generator).tolist()
        return self.collate(data, index)

    def export_inputs(self, data: Seq2SeqData) -> dict[str, torch.Tensor]:
        batch = self.collate(data, list(range(min(4, len(data.sources)))))
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class Seq2SeqHead(nn.Module, ObjectiveHead):
    """The backbone's own vocabulary head: no weights of its own."""

    def __init__(self, options, backbone, reader):
        super().__init__()
        self.options, self.reader = options, reader

    def loss(self, backbone, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = backbone(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"],
                          batch["decoder_attention_mask"]).logits
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                               label_smoothing=self.options.label_smoothing)
        with torch.no_grad():
            real = labels != IGNORE
            accuracy = ((logits.argmax(-1) == labels) & real).sum() / real.sum()
        return loss, {"loss": loss.detach(), "token_accuracy": accuracy}

    @torch.no_grad()
    def evaluate(self, backbone, data: Seq2SeqData) -> dict[str, float]:
        """Token accuracy (teacher-forced) and greedy exact match on held-back pairs; on the
        first training pairs, with their loss, when none are held back (then no eval_loss)."""
        prefix = "heldout_" if data.heldout else "train_"
        data = data.heldout or data
        n = min(self.options.eval_examples, len(data.sources))
        if n == 0:
            return {}
        was_training = backbone.training
        backbone.eval()
        try:
            batch = {k: v.to(device_of(backbone)) for k, v in self.reader.collate(data, list(range(n))).items()}
            _, figures = self.loss(backbone, batch)
            width = batch["labels"].shape[1]
            out = backbone.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=width,
                                    eos_token_id=self.reader.eos, pad_token_id=self.reader.eos,
                                    decoder_start_token_id=self.reader.start)[:, 1:]
            exact = sum(out[i, :len(t)].tolist() == t for i, t in enumerate(data.targets[:n]))
        finally:
            backbone.train(was_training)
        figures = {**{k: float(v) for k, v in figures.items()}, "exact_match": exact / n, "examples": n}
        if prefix == "heldout_":
            del figures["loss"]  # the held-back loss is eval_loss
        return {prefix + k: v for k, v in figures.items()}

    def logits(self, backbone, output, attention_mask) -> torch.Tensor:
        return output.logits


class Seq2SeqExport(ObjectiveExport):
    def graphs(self, model, exporter, inputs) -> dict[str, Any]:
        """The encoder/decoder pair the seq2seq task decodes with (no model.onnx)."""
        return exporter.encoder_decoder(model.backbone, inputs, max_new_tokens=self.options.max_new_tokens,
                                        decoder_start_token_id=self.reader.start, eos_token_id=self.reader.eos)

    def task_record(self, seq_len: int) -> Seq2SeqRecord:
        r = self.reader
        return Seq2SeqRecord(task=self.task, decoder_start_token_id=r.start, eos_token_id=r.eos, pad_token_id=r.pad,
                          max_new_tokens=self.options.max_new_tokens, max_length=seq_len,
                          **({"sentinel_base": r.past_vocab_base} if r.past_vocab_base is not None else {}))


class Seq2Seq(Objective):
    task = "seq2seq"
    perplexity = True
    Reader, Head, Export = Seq2SeqReader, Seq2SeqHead, Seq2SeqExport

    @classmethod
    def check_backbone(cls, backbone) -> None:
        if not getattr(backbone, "is_encoder_decoder", False) or not isinstance(backbone, EncoderDecoder):
            raise UserError(f"seq2seq needs an encoder-decoder backbone (bart or t5, say); "
                            f"{type(backbone).__name__} is not one")
