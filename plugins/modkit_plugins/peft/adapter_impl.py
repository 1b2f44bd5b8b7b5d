"""Houlsby et al. (2019) adapters: h + up(act(down(h))) on the output of a layer.

The up projection starts at zero, so a fresh adapter is the identity and the wrapped model
computes exactly what the base did; the down projection starts small and random, so the
gradient reaches both projections from the first step. Adapters cannot be folded into a
linear layer (the nonlinearity is in the way): merging leaves them in place.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import nn

from modkit.errors import UserError
from modkit.interfaces import PeftMethod
from modkit.nn.blocks import ACTIVATIONS, RMSNorm, iter_roles

_ACTIVATIONS = {**ACTIVATIONS, "tanh": torch.tanh}


class Bottleneck(nn.Module):
    """``h + up(act(down(h)))``: 2dm + d + m parameters."""

    def __init__(self, d: int, m: int, activation: str):
        super().__init__()
        self.down = nn.Linear(d, m)
        self.up = nn.Linear(m, d)
        self.activation = activation
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(_ACTIVATIONS[self.activation](self.down(h)))


class AdapterLayer(nn.Module):
    """A role-carrying layer followed by its adapter. ``base`` is what was there before (a
    linear layer, or another method's wrapper), so LoRA can still reach the linear inside."""

    def __init__(self, base: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.base = base
        self.adapter = adapter
        self.modkit_role = base.modkit_role

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def _out_features(layer: nn.Module) -> int:
    while not isinstance(layer, nn.Linear):
        layer = layer.base
    return layer.out_features


def _has_adapter(layer: nn.Module) -> bool:
    while layer is not None:
        if isinstance(layer, AdapterLayer):
            return True
        layer = getattr(layer, "base", None)
    return False


class Adapters(PeftMethod):
    merges = False  # the nonlinearity keeps every adapter in the graph

    def apply(self, model: nn.Module) -> list[nn.Module]:
        o = self.options
        targets = o.roles()
        added = []
        for parent, name, role in list(iter_roles(model)):
            if not any(fnmatchcase(role, pat) for pat in targets):
                continue
            layer = getattr(parent, name)
            if _has_adapter(layer):
                raise UserError(f"adapter: {role} already has an adapter; one adapter per layer "
                                "(remove the second 'adapter' or give it other targets)")
            ref = next(layer.parameters())
            adapter = Bottleneck(_out_features(layer), o.bottleneck, o.activation).to(ref.device, ref.dtype)
            setattr(parent, name, AdapterLayer(layer, adapter))
            added.append(adapter)
        if not added:
            roles = sorted({role for _, _, role in iter_roles(model)})
            raise UserError(f"adapter: targets {targets} match no layer; roles here: {', '.join(roles)}")
        if o.train_layer_norms:
            added += [m for m in model.modules() if isinstance(m, (nn.LayerNorm, RMSNorm))]
        return added

    def merge(self, model: nn.Module) -> None:
        """Nothing folds: an adapter's nonlinearity keeps it a module of its own."""

    @classmethod
    def to_hf_peft(cls, model: nn.Module, hf_weights: dict, hf_config: dict):
        if any(isinstance(m, AdapterLayer) for m in model.modules()):
            raise UserError("adapter: Hugging Face PEFT has no Houlsby bottleneck adapters; train with "
                            "`lora` (which export-peft writes) or serve the modkit artifact itself")
        return None
