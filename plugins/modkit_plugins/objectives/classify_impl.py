"""Sequence classification: one hidden state per text -> a linear head.

A tokenizer with a template (BERT's ``[CLS] text [SEP]``) encodes each text with it;
otherwise the tokenizer's eos is appended as GPT's extract token. The head reads the state
the ``pooling`` option names.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modkit.data import device_of, pad_batch, read_jsonl, split_holdout
from modkit.errors import UserError
from modkit.interfaces import Objective
from modkit.nn.losses import lm_loss


@dataclass
class Examples:
    train: list[tuple[list[int], int]]
    heldout: list[tuple[list[int], int]]


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D) -> (B, D): the state at each row's last real token."""
    if attention_mask is None:
        return hidden[:, -1]
    last = (attention_mask.sum(1) - 1).clamp(min=0)  # (B,)
    return hidden.gather(1, last[:, None, None].expand(-1, 1, hidden.shape[-1]))[:, 0]


class Classify(nn.Module, Objective):
    task = "classify"

    def __init__(self, options, backbone, tokenizer):
        nn.Module.__init__(self)
        Objective.__init__(self, options, backbone, tokenizer)
        self.tokenizer = tokenizer
        self.use_template = tokenizer.template is not None
        eos = tokenizer.special_id("eos")
        self.extract = [eos] if eos is not None and not self.use_template else []
        self.pooling = options.pooling
        if self.pooling == "auto":
            self.pooling = "last" if getattr(backbone, "is_decoder", False) else "pooler"
        pad = tokenizer.special_id("pad")
        self.pad_id = pad if pad is not None else (self.extract[0] if self.extract else 0)
        self.max_length: int | None = None  # set by load_data; the runtime truncates the same way
        self.dropout = nn.Dropout(options.dropout)
        self.head = nn.Linear(backbone.d_model, len(options.labels))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def load_data(self, path, seq_len):
        o = self.options
        self.max_length = seq_len
        index = {label: i for i, label in enumerate(o.labels)}
        examples = []
        for n, rec in enumerate(read_jsonl(path, [o.text_field, o.label_field]), 1):
            label = str(rec[o.label_field])
            if label not in index:
                raise UserError(f"{path}: record {n}: label {label!r} is not one of {o.labels}")
            examples.append((self.encode(str(rec[o.text_field]), seq_len), index[label]))
        train, heldout = split_holdout(examples, o.holdout)
        return Examples(train, heldout)

    def encode(self, text: str, max_length: int) -> list[int]:
        if self.use_template:
            return self.tokenizer.encode_plus(text, max_length=max_length).ids
        return self.tokenizer.encode(text)[: max_length - len(self.extract)] + self.extract

    def _tensors(self, examples):
        ids, mask = pad_batch([e[0] for e in examples], self.pad_id)
        return ids, mask, torch.tensor([e[1] for e in examples])

    def batch(self, data, batch_size, generator):
        picks = torch.randint(0, len(data.train), (batch_size,), generator=generator).tolist()
        ids, mask, labels = self._tensors([data.train[i] for i in picks])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def load_eval_data(self, path, seq_len):
        data = self.load_data(path, seq_len)
        return Examples([], data.train + data.heldout)

    def eval_batches(self, data, batch_size, limit):
        held = data.heldout[:limit]
        batches = []
        for i in range(0, len(held), batch_size):
            ids, mask, labels = self._tensors(held[i: i + batch_size])
            batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
        return batches

    def logits(self, backbone, output, attention_mask):
        if self.pooling == "last":
            state = last_token_states(output.last_hidden_state, attention_mask)
        elif self.pooling == "pooler" and output.pooler_output is not None:
            state = output.pooler_output
        else:
            state = output.last_hidden_state[:, 0]
        return self.head(self.dropout(state))

    def hf_head(self, backbone):
        return {"kind": "sequence-classification", "weight": self.head.weight, "bias": self.head.bias,
                "labels": list(self.options.labels), "pooling": self.pooling, "dropout": self.options.dropout}

    def loss(self, backbone, batch):
        out = backbone(batch["input_ids"], batch["attention_mask"])
        logits = self.logits(backbone, out, batch["attention_mask"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        figures = {"cls_loss": loss.item(), "accuracy": (logits.argmax(-1) == batch["labels"]).float().mean().item()}
        if self.options.aux_lm_weight > 0:
            aux = lm_loss(backbone, out.last_hidden_state, batch["input_ids"], batch["attention_mask"])
            loss = loss + self.options.aux_lm_weight * aux
            figures["lm_loss"] = aux.item()
        return loss, figures

    @torch.no_grad()
    def evaluate(self, backbone, data):
        if not data.heldout:
            return {}
        correct, device = 0, device_of(backbone)
        for i in range(0, len(data.heldout), 32):
            ids, mask, labels = (t.to(device) for t in self._tensors(data.heldout[i: i + 32]))
            pred = self.logits(backbone, backbone(ids, mask), mask).argmax(-1)
            correct += int((pred == labels).sum())
        majority = Counter(label for _, label in data.train or data.heldout).most_common(1)[0][0]
        baseline = sum(label == majority for _, label in data.heldout) / len(data.heldout)
        return {"heldout_accuracy": correct / len(data.heldout), "majority_baseline": baseline,
                "heldout_examples": len(data.heldout)}

    def export_inputs(self, data):
        ids, mask, _ = self._tensors((data.heldout or data.train)[:4])
        return {"input_ids": ids, "attention_mask": mask}

    def heldout_classes(self, data):
        if not data.heldout:
            return None
        ids, mask, labels = self._tensors(data.heldout)
        return {"input_ids": ids, "attention_mask": mask}, labels

    def describe(self):
        return {"task": self.task, "labels": list(self.options.labels), "append_ids": self.extract,
                "use_template": self.use_template, "pad_token_id": self.pad_id, "max_length": self.max_length}
