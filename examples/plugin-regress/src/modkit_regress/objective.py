"""Regression: one hidden state per text (the last real token for decoders, the first for
encoders) -> a linear head -> a number. Targets are standardised for training; the exported
graph undoes it, so it outputs the number itself, shape (batch,)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modkit.data import pad_batch, read_jsonl, split_holdout
from modkit.errors import UserError
from modkit.interfaces import Objective


@dataclass
class Examples:
    train: list[tuple[list[int], float]]
    heldout: list[tuple[list[int], float]]


class Regress(nn.Module, Objective):
    task = "regress"

    def __init__(self, options, backbone, tokenizer):
        nn.Module.__init__(self)
        Objective.__init__(self, options, backbone, tokenizer)
        self.tokenizer = tokenizer
        self.last_token = getattr(backbone, "is_decoder", False)
        eos = tokenizer.special_id("eos")
        # a decoder reads the state after the whole text: end each text with the eos, as GPT does
        self.append = [eos] if self.last_token and eos is not None else []
        pad = tokenizer.special_id("pad")
        self.pad_id = pad if pad is not None else 0
        self.max_length: int | None = None
        self.head = nn.Linear(backbone.d_model, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        # the training targets' mean and spread: buffers, so the artifact's weights keep them
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)[: self.max_length - len(self.append)] + self.append

    def load_data(self, path, seq_len):
        o = self.options
        self.max_length = seq_len
        examples = []
        for n, record in enumerate(read_jsonl(path, [o.text_field, o.value_field]), 1):
            try:
                value = float(record[o.value_field])
            except (TypeError, ValueError):
                raise UserError(f"{path}: record {n}: {o.value_field} = {record[o.value_field]!r} is not a number") from None
            examples.append((self.encode(str(record[o.text_field])), value))
        train, heldout = split_holdout(examples, o.holdout)
        if len(train) < 2:
            raise UserError(f"{path}: fewer than 2 training examples")
        values = torch.tensor([v for _, v in train], dtype=torch.float64)
        self.mean.fill_(values.mean().item())
        self.std.fill_(max(values.std().item(), 1e-6))
        return Examples(train, heldout)

    def _tensors(self, examples):
        ids, mask = pad_batch([e[0] for e in examples], self.pad_id)
        return ids, mask, torch.tensor([e[1] for e in examples], dtype=torch.float32)

    def batch(self, data, batch_size, generator):
        picks = torch.randint(0, len(data.train), (batch_size,), generator=generator).tolist()
        ids, mask, values = self._tensors([data.train[i] for i in picks])
        return {"input_ids": ids, "attention_mask": mask, "values": values}

    def _standardised(self, output, attention_mask) -> torch.Tensor:
        hidden = output.last_hidden_state
        if self.last_token and attention_mask is not None:
            last = (attention_mask.sum(1) - 1).clamp(min=0)
            state = hidden[torch.arange(hidden.shape[0]), last]
        else:
            state = hidden[:, -1] if self.last_token else hidden[:, 0]
        return self.head(state)[:, 0]

    def logits(self, backbone, output, attention_mask):
        return self._standardised(output, attention_mask) * self.std + self.mean

    def loss(self, backbone, batch):
        out = backbone(batch["input_ids"], batch["attention_mask"])
        predicted = self._standardised(out, batch["attention_mask"])
        loss = F.mse_loss(predicted.float(), (batch["values"] - self.mean) / self.std)
        return loss, {"mse_standardised": loss.item()}

    @torch.no_grad()
    def evaluate(self, backbone, data):
        if not data.heldout:
            return {}
        ids, mask, values = self._tensors(data.heldout)
        predicted = self.logits(backbone, backbone(ids, mask), mask)
        return {"heldout_mse": F.mse_loss(predicted, values).item(),
                "heldout_baseline_mse": F.mse_loss(self.mean.expand_as(values).float(), values).item()}

    def export_inputs(self, data):
        ids, mask, _ = self._tensors((data.heldout or data.train)[:4])
        return {"input_ids": ids, "attention_mask": mask}

    def describe(self):
        return {"task": self.task, "append_ids": self.append, "pad_token_id": self.pad_id,
                "max_length": self.max_length, "value_field": self.options.value_field}
