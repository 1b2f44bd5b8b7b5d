"""Sentence embeddings: pooled hidden states, trained on JSON-lines pairs (``text``,
``text_pair``) with sentence-transformers' MultipleNegativesRankingLoss (every other pair of
the batch is a negative). Pooling and normalisation are sentence-transformers' own, so a
checkpoint such as all-MiniLM-L6-v2 embeds as it does there."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modkit.data import pad_batch, read_jsonl, split_holdout
from modkit.errors import UserError
from modkit.interfaces import Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader

from .records import EmbedRecord


@dataclass
class Pairs:
    train: list[tuple[list[int], list[int]]]
    heldout: list[tuple[list[int], list[int]]]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean over real tokens (sentence-transformers' clamp), or the first."""
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask[..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class EmbedReader(ObjectiveReader):
    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        self.pad_id = tokenizer.special_id("pad") or 0
        self.max_length: int | None = None

    def encode(self, text: str) -> list[int]:
        """The template's ids (``[CLS] text [SEP]``); an empty text without a template is one pad."""
        return self.tokenizer.encode_plus(text, max_length=self.max_length).ids or [self.pad_id]

    def load_data(self, path, seq_len):
        o = self.options
        self.max_length = seq_len
        pairs = [(self.encode(str(r[o.text_field])), self.encode(str(r[o.pair_field])))
                 for r in read_jsonl(path, [o.text_field, o.pair_field])]
        train, heldout = split_holdout(pairs, o.holdout)
        if len(train) < 2:
            raise UserError(f"{path}: embed needs at least two training pairs (the others are each one's negatives)")
        return Pairs(train, heldout)

    def collate(self, pairs) -> dict[str, torch.Tensor]:
        ids, mask = pad_batch([a for a, _ in pairs], self.pad_id)
        pair_ids, pair_mask = pad_batch([b for _, b in pairs], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "pair_input_ids": pair_ids, "pair_attention_mask": pair_mask}

    def batch(self, data, batch_size, generator):
        picks = torch.randperm(len(data.train), generator=generator)[:batch_size].tolist()  # no pair twice
        return self.collate([data.train[i] for i in picks])

    def eval_batches(self, data, batch_size, limit):
        """Held-back pairs in order; each batch's other pairs are its negatives, as in training."""
        held = data.heldout[:limit]
        return [self.collate(held[i: i + batch_size]) for i in range(0, len(held), batch_size)
                if len(held[i: i + batch_size]) >= 2]  # one pair alone has no negatives

    def export_inputs(self, data):
        batch = self.collate((data.heldout or data.train)[:4])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class EmbedHead(nn.Module, ObjectiveHead):
    """Pooling only: no weights of its own."""

    def __init__(self, options, backbone, reader):
        super().__init__()
        self.options, self.reader = options, reader

    def embed(self, backbone, ids, mask) -> torch.Tensor:
        return self.logits(backbone, backbone(ids, mask), mask)

    def loss(self, backbone, batch):
        a = F.normalize(self.embed(backbone, batch["input_ids"], batch["attention_mask"]).float(), dim=-1)
        b = F.normalize(self.embed(backbone, batch["pair_input_ids"], batch["pair_attention_mask"]).float(), dim=-1)
        scores = self.options.scale * a @ b.T
        target = torch.arange(len(a))
        loss = F.cross_entropy(scores, target)
        return loss, {"embed_loss": loss.detach(), "pair_accuracy": (scores.argmax(-1) == target).float().mean().detach()}

    @torch.no_grad()
    def evaluate(self, backbone, data):
        """Held-back pairs: how often each text's own pair is the nearest of all their pairs."""
        if len(data.heldout) < 2:
            return {}
        _, figures = self.loss(backbone, self.reader.collate(data.heldout[:256]))
        return {"heldout_" + k: float(v) for k, v in figures.items() if not k.endswith("loss")}  # the loss: eval_loss

    def logits(self, backbone, output, attention_mask):
        vectors = pool(output.last_hidden_state, attention_mask, self.options.pooling)
        return F.normalize(vectors, p=2, dim=-1) if self.options.normalize else vectors


class EmbedExport(ObjectiveExport):
    def task_record(self, seq_len):
        return EmbedRecord(task=self.task, pad_token_id=self.reader.pad_id, max_length=seq_len,
                          pooling=self.options.pooling, normalize=self.options.normalize)


class Embed(Objective):
    task = "embed"
    Reader, Head, Export = EmbedReader, EmbedHead, EmbedExport

    @classmethod
    def check_backbone(cls, backbone):
        if getattr(backbone, "is_encoder_decoder", False):
            raise UserError(f"embed needs an encoder or a decoder, not the encoder-decoder {type(backbone).__name__}")
