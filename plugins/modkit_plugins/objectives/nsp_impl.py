"""Next-sentence prediction: documents (blank-line separated) -> sentence pairs
``[CLS] A [SEP] B [SEP]`` with segment ids; B is A's successor (label 0, IsNext, as in
transformers) or a sentence of another document (label 1, NotNext). The head reads the
pooled first token, as BertForNextSentencePrediction's does.

The text is read through a segment file (:mod:`.textfiles`): documents of sentences tokenized
once into memory maps, so a corpus larger than memory trains with flat resident memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modkit.data import pad_batch
from modkit.errors import UserError
from modkit.interfaces import Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader, capabilities_of
from modkit.segmentfile import SegmentFile

from .pairs import pair_ids
from .textfiles import Holdout, sentence_file
from .records import NextSentenceRecord

LABELS = ["IsNext", "NotNext"]
DOCUMENTS_AT_ONCE = 1 << 16  # documents per piece of the pair-count pass


class DocumentList:
    """The training (or held-back) documents of a segment file, read on demand. ``pairs[j]``
    counts the sentences with a successor in this list's documents up to its ``j``-th (a
    map computed once beside the file), so the ``p``-th such sentence is found by bisection."""

    def __init__(self, text: SegmentFile, split: Holdout, part: str):
        self.text, self.split, self.part = text, split, part
        self.n = split.held if part == "held" else split.train
        self.pairs = text.tokens.derived(f"nsp-pairs-{part}-{split.name}", np.int64, self._pair_counts)

    def _pair_counts(self) -> Iterator[np.ndarray]:
        total = 0
        for lo in range(0, self.n, DOCUMENTS_AT_ONCE):
            d = self.split.index(self.part, np.arange(lo, min(self.n, lo + DOCUMENTS_AT_ONCE)))
            counts = np.cumsum(np.asarray(self.text.documents[d + 1] - self.text.documents[d]) - 1) + total
            total = int(counts[-1])
            yield counts

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    @property
    def n_pairs(self) -> int:
        return int(self.pairs[-1]) if self.n else 0

    def pair(self, p: int) -> tuple[int, int]:
        """(document, sentence) of the ``p``-th sentence with a successor, in order."""
        j = int(np.searchsorted(self.pairs, p, side="right"))
        return j, p - (int(self.pairs[j - 1]) if j else 0)

    def size(self, j: int) -> int:
        d = self.split.index(self.part, j)
        return int(self.text.documents[d + 1] - self.text.documents[d])

    def sentence(self, j: int, i: int) -> list[int]:
        return self.text.segment(int(self.text.documents[self.split.index(self.part, j)]) + i).tolist()


@dataclass
class Documents:
    train: DocumentList
    heldout: DocumentList


def takes_segments(backbone) -> bool:
    return capabilities_of(backbone).takes("token_type_ids")


class NextSentenceReader(ObjectiveReader):
    reads = "text"

    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        self.pad_id = tokenizer.special_id("pad") or 0
        self.segments = takes_segments(backbone)
        self.max_length: int | None = None

    def load_data(self, path, seq_len):
        self.max_length = seq_len
        text = sentence_file(self.tokenizer, path)
        split = Holdout(text.n_documents, self.options.holdout)
        train, heldout = DocumentList(text, split, "train"), DocumentList(text, split, "held")
        for name, part in (("training", train), ("held-back", heldout)):
            if part and (len(part) < 2 or not part.n_pairs):
                raise UserError(f"{path}: nsp needs at least two {name} documents (blank-line separated), "
                                "one with two sentences or more")
        if not train:
            raise UserError(f"{path}: no documents")
        return Documents(train, heldout)

    def draw(self, docs, n: int, generator: torch.Generator) -> list[tuple[list[int], list[int], int]]:
        """``n`` (A, B, label) triples: A a sentence with a successor, B that successor or a
        sentence from another document."""
        pick = torch.randint(docs.n_pairs, (n,), generator=generator).tolist()
        coin = (torch.rand(n, generator=generator) < self.options.not_next_prob).tolist()
        other_doc = torch.randint(len(docs) - 1, (n,), generator=generator).tolist()
        other_sentence = torch.rand(n, generator=generator).tolist()
        out = []
        for k in range(n):
            d, i = docs.pair(pick[k])
            if coin[k]:
                e = other_doc[k] + (other_doc[k] >= d)  # any document but d
                b = docs.sentence(e, int(other_sentence[k] * docs.size(e)))
            else:
                b = docs.sentence(d, i + 1)
            out.append((docs.sentence(d, i), b, int(coin[k])))
        return out

    def collate(self, triples) -> dict[str, torch.Tensor]:
        pairs = [pair_ids(self.tokenizer, a, b, self.max_length) for a, b, _ in triples]
        ids, mask = pad_batch([p[0] for p in pairs], self.pad_id)
        types, _ = pad_batch([p[1] for p in pairs], 0)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                "next_sentence_label": torch.tensor([t[2] for t in triples])}

    def batch(self, data, batch_size, generator):
        return self.collate(self.draw(data.train, batch_size, generator))

    def eval_batches(self, data, batch_size, limit):
        """``limit`` held-back sentence pairs (half of them true successors), drawn with a fixed seed."""
        if not data.heldout:
            return ()
        pairs = self.draw(data.heldout, limit, torch.Generator().manual_seed(0))
        return [self.collate(pairs[i: i + batch_size]) for i in range(0, len(pairs), batch_size)]

    def export_inputs(self, data):
        batch = self.collate(self.draw(data.heldout or data.train, 4, torch.Generator().manual_seed(0)))
        keys = ("input_ids", "attention_mask", "token_type_ids") if self.segments else ("input_ids", "attention_mask")
        return {k: batch[k] for k in keys}


class NextSentenceHead(nn.Module, ObjectiveHead):
    def __init__(self, options, backbone, reader):
        super().__init__()
        self.options, self.reader = options, reader
        self.head = nn.Linear(backbone.d_model, 2)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward_logits(self, backbone, batch):
        extra = {"token_type_ids": batch["token_type_ids"]} if self.reader.segments and "token_type_ids" in batch else {}
        out = backbone(batch["input_ids"], batch["attention_mask"], **extra)
        return self.logits(backbone, out, batch["attention_mask"])

    def loss(self, backbone, batch):
        logits = self.forward_logits(backbone, batch)
        labels = batch["next_sentence_label"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.options.label_smoothing)
        return loss, {"nsp_loss": loss.detach(), "nsp_accuracy": (logits.argmax(-1) == labels).float().mean().detach()}

    @torch.no_grad()
    def evaluate(self, backbone, data):
        if not data.heldout:
            return {}
        batch = self.reader.collate(self.reader.draw(data.heldout, 256, torch.Generator().manual_seed(0)))
        _, figures = self.loss(backbone, batch)
        return {"heldout_" + k: float(v) for k, v in figures.items() if not k.endswith("loss")}  # the loss: eval_loss

    def logits(self, backbone, output, attention_mask):
        pooled = output.pooler_output if output.pooler_output is not None else output.last_hidden_state[:, 0]
        return self.head(pooled)


class NextSentenceExport(ObjectiveExport):
    def task_record(self, seq_len):
        return NextSentenceRecord(task=self.task, labels=LABELS, pad_token_id=self.reader.pad_id, max_length=seq_len)


class NextSentence(Objective):
    task = "next-sentence"
    Reader, Head, Export = NextSentenceReader, NextSentenceHead, NextSentenceExport

    @classmethod
    def check_backbone(cls, backbone):
        if getattr(backbone, "is_decoder", False) or getattr(backbone, "is_encoder_decoder", False):
            raise UserError(f"nsp needs an encoder; {type(backbone).__name__} is not one")
