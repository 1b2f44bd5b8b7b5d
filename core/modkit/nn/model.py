"""The model a build trains: one backbone plus the heads of its stages' objectives."""
from __future__ import annotations

import torch
from torch import nn

from modkit.nn.outputs import ModelOutput
from modkit.objectives import Objective, as_parts


class ModkitModel(nn.Module):
    """``backbone`` plus ``objectives`` (a ModuleDict holding the objectives' heads by
    objective name; :meth:`objective` gives the whole objective, reader and export too).

    The last objective added is the task: ``forward`` returns the backbone's output with
    ``logits`` set by that objective's head, as the exported graph does. Inputs may be (B, T)
    rows or (B, K, T) groups of K rows per example.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.objectives = nn.ModuleDict()
        self._parts: dict[str, Objective] = {}
        self.task: str | None = None

    def add_objective(self, name: str, objective) -> Objective:
        """Register a stage's objective (its head joins the model); a later stage with the same
        name reuses the first. An objective of the old one-class contract is adapted."""
        if name not in self._parts:
            self._parts[name] = as_parts(objective)
            self.objectives[name] = self._parts[name].head
        self.task = name
        return self._parts[name]

    def objective(self, name: str | None = None) -> Objective | None:
        """The objective ``name`` (default: the task's)."""
        name = name or self.task
        return self._parts[name] if name else None

    @property
    def head(self):
        return self.objectives[self.task] if self.task else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> ModelOutput:
        if input_ids.dim() == 3:
            # (B, K, T): K sequences per example (multiple choice, a pair in both orders), as
            # transformers' multiple-choice models take them; the backbone reads the B·K rows
            # and the head regroups them from the (B, K, T) mask it is given
            kwargs = {k: v.flatten(0, 1) if isinstance(v, torch.Tensor) and v.dim() == 3 else v
                      for k, v in kwargs.items()}
            out = self.backbone(input_ids.flatten(0, 1),
                                None if attention_mask is None else attention_mask.flatten(0, 1), **kwargs)
        else:
            out = self.backbone(input_ids, attention_mask, **kwargs)
        if self.head is not None:
            out.logits = self.head.logits(self.backbone, out, attention_mask)
        return out


class ExportGraph(nn.Module):
    """``(input_ids, attention_mask[, token_type_ids]) -> logits``: the signature of an exported
    model.onnx; segment ids are an input where the task's export inputs carry them (pairs)."""

    def __init__(self, model: ModkitModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids, attention_mask, **extra).logits
