"""Token classification: a linear head on every position; each word's tag is read at its first
sub-token, the others are ignored (-100), as BERT's NER fine-tuning did. Words are mapped to
sub-tokens by the tokenizer's ``encode_words`` (the words joined by spaces, each token's word
from its character offsets)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modkit.data import device_of, numbered_jsonl, pad_batch, split_holdout
from modkit.errors import UserError
from modkit.interfaces import Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader

from .tagging import IGNORE, entity_scores, is_bio, token_labels
from .records import TokenClassifyRecord


@dataclass
class Sentences:
    #: per sentence: token ids, per-token labels (-100 but at first sub-tokens), word tags
    train: list[tuple[list[int], list[int], list[int]]]
    heldout: list[tuple[list[int], list[int], list[int]]]


class TokenClassifyReader(ObjectiveReader):
    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        pad = tokenizer.special_id("pad")
        self.pad_id = pad if pad is not None else 0
        self.max_length: int | None = None

    @property
    def label_names(self) -> list[str]:
        """What `modkit preview` shows for the labels: tag names, not token ids."""
        return list(self.options.tags)

    def load_data(self, path, seq_len):
        o = self.options
        self.max_length = seq_len
        index = {tag: i for i, tag in enumerate(o.tags)}
        sentences = []
        for line, rec in numbered_jsonl(path, [o.tokens_field, o.tags_field]):
            words, tags = rec[o.tokens_field], rec[o.tags_field]
            where = f"{path}:{line}"
            if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise UserError(f"{where}: {o.tokens_field!r} must be a non-empty list of words")
            if not isinstance(tags, list) or len(tags) != len(words):
                raise UserError(f"{where}: {o.tags_field!r} must hold one tag per word ({len(words)} words)")
            unknown = [t for t in tags if t not in index]
            if unknown:
                raise UserError(f"{where}: tag {unknown[0]!r} is not one of {o.tags}")
            encoding, word_ids = self.tokenizer.encode_words(words, max_length=seq_len)
            word_tags = [index[t] for t in tags]
            sentences.append((encoding.ids, token_labels(word_ids, word_tags), word_tags))
        train, heldout = split_holdout(sentences, o.holdout)
        if not train:
            raise UserError(f"{path}: no training sentences left after holding back {o.holdout:.0%}")
        return Sentences(train, heldout)

    def tensors(self, sentences):
        ids, mask = pad_batch([s[0] for s in sentences], self.pad_id)
        labels, _ = pad_batch([s[1] for s in sentences], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def batch(self, data, batch_size, generator):
        picks = torch.randint(0, len(data.train), (batch_size,), generator=generator).tolist()
        return self.tensors([data.train[i] for i in picks])

    def load_eval_data(self, path, seq_len):
        data = self.load_data(path, seq_len)
        return Sentences([], data.train + data.heldout)

    def eval_batches(self, data, batch_size, limit):
        held = data.heldout[:limit]
        return [self.tensors(held[i: i + batch_size]) for i in range(0, len(held), batch_size)]

    def export_inputs(self, data):
        batch = self.tensors((data.heldout or data.train)[:4])
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


class TokenClassifyHead(nn.Module, ObjectiveHead):
    def __init__(self, options, backbone, reader):
        super().__init__()
        self.options, self.reader = options, reader
        self.dropout = nn.Dropout(options.dropout)
        self.head = nn.Linear(backbone.d_model, len(options.tags))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def logits(self, backbone, output, attention_mask):
        return self.head(self.dropout(output.last_hidden_state))  # (B, T, tags)

    def loss(self, backbone, batch):
        logits = self.logits(backbone, backbone(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                               label_smoothing=self.options.label_smoothing)
        scored = labels != IGNORE
        # the mean over no scored position is nan: 0, without reading the mask on the host
        hits = (logits.argmax(-1) == labels) & scored
        accuracy = hits.sum() / scored.sum().clamp(min=1)
        return loss, {"tag_loss": loss.detach(), "tag_accuracy": accuracy.detach().float()}

    @torch.no_grad()
    def evaluate(self, backbone, data):
        """Word-level accuracy (words cut off by ``seq_len`` count as wrong), the accuracy of
        always answering the most frequent training tag, and entity F1 for BIO tags."""
        if not data.heldout:
            return {}
        tags = self.options.tags
        gold, predicted, device = [], [], device_of(backbone)
        for i in range(0, len(data.heldout), 32):
            part = data.heldout[i: i + 32]
            batch = {k: v.to(device) for k, v in self.reader.tensors(part).items()}
            best = self.logits(backbone, backbone(batch["input_ids"], batch["attention_mask"]),
                               batch["attention_mask"]).argmax(-1)
            for row, (_, labels, word_tags) in zip(best.tolist(), part):
                words = [tags[row[p]] for p, label in enumerate(labels) if label != IGNORE]  # first sub-tokens
                gold.append([tags[t] for t in word_tags])
                predicted.append(words + [None] * (len(word_tags) - len(words)))
        n_words = sum(len(g) for g in gold)
        common = tags[Counter(t for s in data.train or data.heldout for t in s[2]).most_common(1)[0][0]]
        figures = {"heldout_accuracy": sum(a == b for g, p in zip(gold, predicted) for a, b in zip(g, p)) / n_words,
                   "majority_baseline": sum(t == common for g in gold for t in g) / n_words,
                   "heldout_words": n_words}
        if is_bio(tags):
            figures.update(entity_scores(gold, predicted))
        return figures


class TokenClassifyExport(ObjectiveExport):
    def hf_head(self, backbone):
        return {"kind": "token-classification", "weight": self.head.head.weight, "bias": self.head.head.bias,
                "labels": list(self.options.tags), "pooling": None, "dropout": self.options.dropout}

    def task_record(self, seq_len):
        return TokenClassifyRecord(task=self.task, tags=list(self.options.tags), pad_token_id=self.reader.pad_id,
                          max_length=seq_len)


class TokenClassify(Objective):
    task = "token-classify"
    Reader, Head, Export = TokenClassifyReader, TokenClassifyHead, TokenClassifyExport

    @classmethod
    def check_backbone(cls, backbone):
        if getattr(backbone, "is_encoder_decoder", False):
            raise UserError(f"token-classify tags the positions of one stack; {type(backbone).__name__} "
                            "is an encoder-decoder")
