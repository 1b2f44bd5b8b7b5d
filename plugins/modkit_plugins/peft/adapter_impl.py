"""Houlsby et al. (2019) adapters: h + up(act(down(h))) on the output of a layer.

The up projection starts at zero, so a fresh adapter is the identity and the wrapped model
computes exactly what the base did; the down projection starts small and random, so the
gradient reaches both projections from the first step. Adapters cannot be folded into a
linear layer (the nonlinearity is in the way): merging leaves them in place.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import get_args

import torch
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


def _innermost(layer: nn.Module) -> nn.Linear:
    while not isinstance(layer, nn.Linear):
        layer = layer.base
    return layer


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
            adapter = Bottleneck(_innermost(layer).out_features, o.bottleneck, o.activation).to(ref.device, ref.dtype)
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

    @classmethod
    def from_hf_peft(cls, config: dict, weights: dict, model: nn.Module):
        """An AdapterHub (``adapters`` 1.x, or adapter-transformers) bottleneck adapter of the
        Houlsby kind (``double_seq_bn``): each ``<module>.adapters.<name>`` follows the
        role-carrying linear layer inside ``<module>`` (BERT's ``attention.output`` holds
        attn.o, ``output`` holds ffn.down), before the residual add and layer norm, as here."""
        from modkit.builder.hf.peft_folders import match_hf_parent
        from modkit_plugins.peft.adapter import AdapterOptions

        hub = config.get("config")
        if "peft_type" in config or not isinstance(hub, dict) or hub.get("architecture", "bottleneck") != "bottleneck":
            return None
        name = config.get("name", "?")
        houlsby = {"original_ln_before": False, "original_ln_after": True, "residual_before_ln": True,
                   "adapter_residual_before_ln": False, "ln_before": False, "ln_after": False, "is_parallel": False,
                   "use_gating": False, "phm_layer": False, "inv_adapter": None}
        different = [f"{k} = {hub.get(k)!r}" for k, v in houlsby.items() if hub.get(k, v) != v]
        scaling = hub.get("scaling", 1.0)
        if not isinstance(scaling, (int, float)):
            different.append(f"scaling = {scaling!r}")
        if different:
            raise UserError(f"AdapterHub adapter {name!r}: {', '.join(different)} is not a Houlsby-style bottleneck "
                            "adapter; modkit's adapter reads double_seq_bn (and seq_bn-like configs without "
                            "original_ln_before)")
        activation = str(hub.get("non_linearity", "swish")).lower()
        known = get_args(AdapterOptions.model_fields["activation"].annotation)
        if activation not in known:
            raise UserError(f"AdapterHub adapter {name!r}: non_linearity {activation!r} is not one of {', '.join(known)}")
        marker = f".adapters.{name}.adapter_down.0.weight"
        modules = sorted(k[: -len(marker)] for k in weights if k.endswith(marker))
        if not modules:
            raise UserError(f"AdapterHub adapter {name!r}: no *{marker} weights in adapter.safetensors")
        places = {}
        for module in modules:
            hf_name, (part, *more) = match_hf_parent(model, module)
            if more or part.rows != slice(0, part.linear.out_features):
                raise UserError(f"AdapterHub adapter {name!r}: {module} follows {hf_name}, which is not one whole "
                                "modkit layer")
            places[id(part.linear)] = (module, part.role)
        bottleneck = weights[modules[0] + marker].shape[0]
        method = cls(AdapterOptions(bottleneck=bottleneck, activation=activation,
                                    targets=sorted({role for _, role in places.values()})))
        added = method.apply(model)
        mine = {id(m) for m in added}
        layers = [m for m in model.modules() if isinstance(m, AdapterLayer) and id(m.adapter) in mine]
        with torch.no_grad():
            for layer in layers:
                adapter = layer.adapter
                place = places.get(id(_innermost(layer.base)))
                if place is None:  # a layer of a targeted role the adapter leaves out (leave_out): identity
                    adapter.up.weight.zero_()
                    adapter.up.bias.zero_()
                    continue
                key = f"{place[0]}.adapters.{name}"
                adapter.down.weight.copy_(weights[f"{key}.adapter_down.0.weight"])
                adapter.down.bias.copy_(weights[f"{key}.adapter_down.0.bias"])
                # AdapterHub scales the up projection's output; a linear layer holds it exactly
                adapter.up.weight.copy_(weights[f"{key}.adapter_up.weight"] * scaling)
                adapter.up.bias.copy_(weights[f"{key}.adapter_up.bias"] * scaling)
        return method, added

