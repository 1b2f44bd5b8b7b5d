"""Sequence classification: one hidden state per sequence -> a linear head, in GPT's input
formats (single, pair, similarity, choice; see :mod:`.formats`).

A tokenizer with a template (BERT's ``[CLS] a [SEP] b [SEP]``) builds each sequence with it,
and an encoder that takes segment ids gets them for pairs. Otherwise GPT's special tokens
frame it: start = the tokenizer's ``bos`` (none without one), delimiter = its ``sep`` (else
``eos``), extract = its ``cls`` (else ``eos``). The head reads the state the ``pooling`` option
names: for decoders the last real token, the extract token.

The grouped formats read (B, K, T) inputs, as transformers' multiple-choice models do: the
backbone runs on the B·K rows; similarity sums each example's two states before the head,
choice scores each row with a one-output head and the loss is the cross-entropy over the K.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modkit.data import device_of, numbered_jsonl, pad_batch, split_holdout
from modkit.errors import UserError
from modkit.interfaces import Objective, ObjectiveExport, ObjectiveHead, ObjectiveReader
from modkit.nn.losses import lm_loss

from .formats import FIELDS, GROUPED, Layout, Row
from .nsp_impl import takes_segments
from .records import ClassifyRecord


@dataclass
class Examples:
    #: per example: its rows, its label index, and (choice) each candidate answer's ids
    train: list[tuple[list[Row], int, list[list[int]] | None]]
    heldout: list[tuple[list[Row], int, list[list[int]] | None]]


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, D) -> (B, D): the state at each row's last real token."""
    if attention_mask is None:
        return hidden[:, -1]
    last = (attention_mask.sum(1) - 1).clamp(min=0)  # (B,)
    return hidden.gather(1, last[:, None, None].expand(-1, 1, hidden.shape[-1]))[:, 0]


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    """(B, K, T) -> (B·K, T); (B, T) as it is."""
    return t.flatten(0, 1) if t is not None and t.dim() == 3 else t


class ClassifyReader(ObjectiveReader):
    def __init__(self, options, backbone, tokenizer):
        super().__init__(options, backbone, tokenizer)
        self.format = options.format
        self.use_template = tokenizer.template is not None
        eos = tokenizer.special_id("eos")

        def role(name: str, fallback: int | None) -> list[int]:
            found = tokenizer.special_id(name)
            found = fallback if found is None else found
            return [] if found is None or self.use_template else [found]

        self.start, self.delimiter, self.extract = role("bos", None), role("sep", eos), role("cls", eos)
        # segment ids only through a template (a decoder's token_type_ids would add embeddings)
        self.segments = self.use_template and self.format != "single" and takes_segments(backbone)
        pad = tokenizer.special_id("pad")
        self.pad_id = pad if pad is not None else (self.extract[0] if self.extract else 0)
        self.max_length: int | None = None  # set by load_data; the runtime truncates the same way

    @property
    def layout(self) -> Layout:
        return Layout(self.format, self.use_template, tuple(self.start), tuple(self.delimiter), tuple(self.extract),
                      self.max_length or 10**9)

    def load_data(self, path, seq_len):
        o = self.options
        self.max_length = seq_len
        names = dict(zip(("text", "text_pair", "choices"), (o.text_field, o.text_pair_field, o.choices_field)))
        fields = [names[f] for f in FIELDS[self.format]]
        layout, examples, n_choices = self.layout, [], None
        for line, rec in numbered_jsonl(path, fields + [o.label_field]):
            where = f"{path}:{line}"
            if self.format == "choice":
                choices = rec[o.choices_field]
                if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                    raise UserError(f"{where}: {o.choices_field!r} must be a list of two texts or more, not {choices!r}")
                n_choices = n_choices or len(choices)
                if len(choices) != n_choices:  # one (B, K, T) batch needs one K
                    raise UserError(f"{where}: {len(choices)} choices, but the file's first record has {n_choices}; "
                                    "every record needs the same number")
                label = self._choice_label(rec[o.label_field], choices, where)
                rows = layout.rows(self.tokenizer, str(rec[o.text_field]), choices=choices)
                answers = [self.tokenizer.encode(c) for c in choices]
            else:
                label = str(rec[o.label_field])
                if label not in o.labels:
                    raise UserError(f"{where}: label {label!r} is not one of {o.labels}")
                label = o.labels.index(label)
                rows = layout.rows(self.tokenizer, str(rec[o.text_field]),
                                   str(rec[o.text_pair_field]) if "text_pair" in FIELDS[self.format] else None)
                answers = None
            examples.append((rows, label, answers))
        train, heldout = split_holdout(examples, o.holdout)
        if not train:
            raise UserError(f"{path}: no training examples left after holding back {o.holdout:.0%}")
        return Examples(train, heldout)

    @staticmethod
    def _choice_label(value, choices: list[str], where: str) -> int:
        """The right choice: its index, or its text."""
        if isinstance(value, str) and value in choices:
            return choices.index(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
            return value
        raise UserError(f"{where}: label {value!r} is not a choice: give an index 0..{len(choices) - 1} "
                        "or one of the choices' texts")

    def tensors(self, examples) -> dict[str, torch.Tensor]:
        arrays = self.layout.arrays([rows for rows, _, _ in examples], self.pad_id)
        batch = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "token_type_ids" or self.segments}
        batch["labels"] = torch.tensor([label for _, label, _ in examples])
        return batch

    def batch(self, data, batch_size, generator):
        picks = torch.randint(0, len(data.train), (batch_size,), generator=generator).tolist()
        examples = [data.train[i] for i in picks]
        batch = self.tensors(examples)
        if self.format == "choice":  # each candidate's own ids, (B, K, L): what `modkit preview` shows
            ids, mask = pad_batch([a for _, _, answers in examples for a in answers], self.pad_id)
            batch["choice_ids"] = ids.view(batch_size, -1, ids.shape[-1])
            batch["choice_attention_mask"] = mask.view(batch_size, -1, ids.shape[-1])
        return batch

    def load_eval_data(self, path, seq_len):
        data = self.load_data(path, seq_len)
        return Examples([], data.train + data.heldout)

    def eval_batches(self, data, batch_size, limit):
        held = data.heldout[:limit]
        return [self.tensors(held[i: i + batch_size]) for i in range(0, len(held), batch_size)]

    def export_inputs(self, data):
        batch = self.tensors((data.heldout or data.train)[:4])
        del batch["labels"]
        return batch

    def heldout_classes(self, data):
        if not data.heldout:
            return None
        batch = self.tensors(data.heldout)
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]


class ClassifyHead(nn.Module, ObjectiveHead):
    def __init__(self, options, backbone, reader):
        super().__init__()
        self.options, self.reader = options, reader
        self.pooling = options.pooling
        if self.pooling == "auto":
            self.pooling = "last" if getattr(backbone, "is_decoder", False) else "pooler"
        self.dropout = nn.Dropout(options.dropout)
        self.head = nn.Linear(backbone.d_model, 1 if options.format == "choice" else len(options.labels))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _forward(self, backbone, batch):
        extra = {"token_type_ids": _flat(batch["token_type_ids"])} if "token_type_ids" in batch else {}
        return backbone(_flat(batch["input_ids"]), _flat(batch["attention_mask"]), **extra)

    def logits(self, backbone, output, attention_mask):
        """(B, C) class logits, or (B, K) choice scores; ``attention_mask`` is (B, K, T) for the
        grouped formats, and ``output`` the backbone's over the B·K rows."""
        if self.pooling == "last":
            state = last_token_states(output.last_hidden_state, _flat(attention_mask))
        elif self.pooling == "pooler" and output.pooler_output is not None:
            state = output.pooler_output
        else:
            state = output.last_hidden_state[:, 0]
        if self.reader.format == "similarity":  # both orders' states summed (GPT, figure 1)
            state = state.view(attention_mask.shape[0], attention_mask.shape[1], -1).sum(1)
        logits = self.head(self.dropout(state))
        if self.reader.format == "choice":
            logits = logits.view(attention_mask.shape[0], attention_mask.shape[1])
        return logits

    def loss(self, backbone, batch):
        out = self._forward(backbone, batch)
        logits = self.logits(backbone, out, batch["attention_mask"])
        loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.options.label_smoothing)
        figures = {"cls_loss": loss.detach(), "accuracy": (logits.argmax(-1) == batch["labels"]).float().mean().detach()}
        if self.options.aux_lm_weight > 0:  # GPT's L3: the LM loss over every row the model read
            aux = lm_loss(backbone, out.last_hidden_state, _flat(batch["input_ids"]), _flat(batch["attention_mask"]))
            loss = loss + self.options.aux_lm_weight * aux
            figures["lm_loss"] = aux.detach()
        return loss, figures

    @torch.no_grad()
    def evaluate(self, backbone, data):
        if not data.heldout:
            return {}
        correct, device = 0, device_of(backbone)
        for i in range(0, len(data.heldout), 32):
            batch = {k: v.to(device) for k, v in self.reader.tensors(data.heldout[i: i + 32]).items()}
            pred = self.logits(backbone, self._forward(backbone, batch), batch["attention_mask"]).argmax(-1)
            correct += int((pred == batch["labels"]).sum())
        majority = Counter(label for _, label, _ in data.train or data.heldout).most_common(1)[0][0]
        figures = {"heldout_accuracy": correct / len(data.heldout),
                   "majority_baseline": sum(label == majority for _, label, _ in data.heldout) / len(data.heldout),
                   "heldout_examples": len(data.heldout)}
        if self.reader.format == "choice":
            figures["chance_baseline"] = 1 / len(data.heldout[0][0])
        return figures


class ClassifyExport(ObjectiveExport):
    def hf_head(self, backbone):
        if self.reader.format in GROUPED:
            return None  # no transformers class reads a summed pair or per-choice scores from these weights
        return {"kind": "sequence-classification", "weight": self.head.head.weight, "bias": self.head.head.bias,
                "labels": list(self.options.labels), "pooling": self.head.pooling, "dropout": self.options.dropout}

    def task_record(self, seq_len):
        r = self.reader
        return ClassifyRecord(task=self.task, format=r.format,
                          labels=list(self.options.labels) if self.options.labels else None,
                          prepend_ids=r.start, delimiter_ids=r.delimiter, append_ids=r.extract,
                          use_template=r.use_template, pad_token_id=r.pad_id, max_length=seq_len)


class Classify(Objective):
    task = "classify"
    Reader, Head, Export = ClassifyReader, ClassifyHead, ClassifyExport
