"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update.

A starts Gaussian and B at zero, so a freshly wrapped model computes exactly what the base
did. :meth:`LoRALinear.delta_weight` is the one definition of the update; merge and unmerge
both go through it.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from modkit.nn.blocks import iter_roles, match_roles
from modkit.errors import ModkitError, UserError
from modkit.interfaces import PeftMethod
from modkit_plugins.peft.lora import LoRAOptions


class LoRAUpdate(nn.Module):
    """The trainable part: A (r, in) Gaussian, B (out, r) zero, in the base layer's dtype and on
    its device. A is drawn in float32 on the CPU first, so a seed gives the same A everywhere."""

    def __init__(self, d_in: int, d_out: int, r: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        super().__init__()
        a = torch.randn(r, d_in, device="cpu") / r
        self.A = nn.Parameter(a.to(dtype=dtype, device=device))
        self.B = nn.Parameter(torch.zeros(d_out, r, dtype=dtype, device=device))


class LoRALinear(nn.Module):
    """``base(x) + scaling * B(A(dropout(x)))`` with the base layer frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.modkit_role = base.modkit_role
        self.update = LoRAUpdate(base.in_features, base.out_features, r, dtype=base.weight.dtype,
                                 device=base.weight.device)
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        self.merged = False
        self._original: torch.Tensor | None = None  # exact base weight, restored by unmerge

    def delta_weight(self) -> torch.Tensor:
        return (self.update.B @ self.update.A) * self.scaling  # (out, in), like base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + (self.dropout(x) @ self.update.A.T @ self.update.B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update to the weight of the linear layer underneath. With LoRAs stacked on
        one layer (this one's ``base`` another wrapper), that is the innermost linear: the
        wrappers in between still add their own updates, so any merge order computes the same.
        Unmerge in the reverse order of merging."""
        if self.merged:
            return
        weight = _innermost_linear(self.base).weight
        # at least fp32 for the sum: half-precision weights would lose the small update
        dtype = torch.promote_types(weight.dtype, torch.float32)
        merged = weight.to(dtype) + self.delta_weight().to(dtype)
        # (a dry run on the meta device has no values to check)
        if merged.device.type != "meta" and not torch.isfinite(merged).all():
            raise ModkitError(f"LoRA on {self.modkit_role}: merged weights are not finite; the adapter is broken")
        self._original = weight.detach().clone()
        weight.copy_(merged.to(weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        _innermost_linear(self.base).weight.copy_(self._original)
        self._original = None
        self.merged = False


def _checked_wrapper(module: nn.Module) -> nn.Module:
    if not hasattr(module, "base"):
        raise UserError(f"LoRA cannot wrap {type(module).__name__} with role {module.modkit_role!r}")
    return module


def _innermost_linear(module: nn.Module) -> nn.Linear:
    """Follow `.base` through PEFT wrappers (this method's or another's) to the nn.Linear."""
    while not isinstance(module, nn.Linear):
        module = _checked_wrapper(module).base
    return module


class LoRA(PeftMethod):
    """Wraps each role-matched linear layer in a :class:`LoRALinear`, innermost: under another
    PEFT method's wrapper (an adapter on ``attn.o``), so merging into the weight is exact. A
    second LoRA on the same layer wraps the linear inside the first; the updates add up."""

    def apply(self, model: nn.Module) -> list[nn.Module]:
        o = self.options
        self._wrapped: list[LoRALinear] = []
        for parent, name, role in match_roles(model, o.targets):
            owner, attr = parent, name
            while not isinstance(getattr(owner, attr), nn.Linear):
                owner, attr = _checked_wrapper(getattr(owner, attr)), "base"
            wrapped = LoRALinear(getattr(owner, attr), o.r, o.alpha, o.dropout)
            setattr(owner, attr, wrapped)
            self._wrapped.append(wrapped)
        if not self._wrapped:
            roles = sorted({role for _, _, role in iter_roles(model)})
            raise UserError(f"lora: targets {o.targets} match no layer; roles here: {', '.join(roles)}")
        return [w.update for w in self._wrapped]

    def merge(self, model: nn.Module) -> None:
        """Merge this method's LoRA layers and put what each wrapped back in its place."""
        mine = {id(w) for w in getattr(self, "_wrapped", [])}
        for owner in list(model.modules()):
            for attr, child in list(owner.named_children()):
                if id(child) in mine:
                    child.merge()
                    setattr(owner, attr, child.base)

    @classmethod
    def from_hf_peft(cls, config: dict, weights: dict, model: nn.Module):
        """A Hugging Face PEFT LoRA folder: each PEFT module becomes the modkit layer(s) it is
        (a fused projection such as GPT-2's c_attn splits B's rows over q, k and v, with one A)."""
        from modkit.builder.hf.peft_folders import match_hf_modules

        if config.get("peft_type") != "LORA":
            return None
        unsupported = [k for k in ("use_dora", "lora_bias", "rank_pattern", "alpha_pattern", "modules_to_save")
                       if config.get(k)]
        if unsupported:
            raise UserError(f"LoRA adapter: {', '.join(unsupported)} is not supported by modkit's lora")
        names = sorted({k.split(".lora_A.")[0] for k in weights if ".lora_A." in k})
        if not names:
            raise UserError("LoRA adapter: no lora_A weights in adapter_model.safetensors")
        slices = match_hf_modules(model, names)
        r = int(config["r"])
        scaling = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
        roles = sorted({s.role for group in slices.values() for s in group})
        method = cls(LoRAOptions(r=r, alpha=scaling * r, targets=roles, dropout=config.get("lora_dropout", 0.0)))
        modules = method.apply(model)
        wrappers = {id(m.base): m for m in model.modules() if isinstance(m, LoRALinear)}
        with torch.no_grad():
            for m in modules:  # layers of a targeted role that the folder leaves out stay exact
                m.B.zero_()
            for name, group in slices.items():
                a, b = weights[name + ".lora_A.weight"], weights[name + ".lora_B.weight"]
                for s in group:
                    update = wrappers[id(s.linear)].update
                    update.A.copy_(a)
                    update.B.copy_(b[s.rows])
        return method, modules

    @classmethod
    def to_hf_peft(cls, model: nn.Module, hf_weights: dict, hf_config: dict):
        """LoRA layers as one PEFT LoRA folder. The scale goes into B (lora_alpha = r); a fused
        Hugging Face projection (c_attn) gets block-diagonal factors of rank sum(r), which is
        exactly the q, k and v updates side by side."""
        from modkit.builder.hf.peft_folders import PEFT_PREFIX, find_in_hf_weights

        wrappers = [m for m in model.modules() if isinstance(m, LoRALinear) and not m.merged]
        if not wrappers:
            return None
        modules: dict[str, list] = {}
        conv1d = set()
        for w in wrappers:
            name, rows, transposed = find_in_hf_weights(hf_weights, w.base)
            modules.setdefault(name, []).append((rows, w))
            if transposed:
                conv1d.add(name)
        weights, ranks = {}, {}
        for name, parts in modules.items():
            parts.sort(key=lambda p: p[0].start)
            weight = hf_weights[name + ".weight"]  # (out, in), or Conv1D's (in, out)
            width = weight.shape[1] if name in conv1d else weight.shape[0]
            a = torch.cat([w.update.A.detach() for _, w in parts])
            b = torch.zeros(width, a.shape[0], dtype=a.dtype)
            col = 0
            for rows, w in parts:
                r = w.update.A.shape[0]
                b[rows, col:col + r] = w.update.B.detach() * w.scaling
                col += r
            weights[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a
            weights[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b
            ranks[name] = a.shape[0]
        r = min(ranks.values())
        pattern = {re.escape(n): k for n, k in ranks.items() if k != r}
        config = {"peft_type": "LORA", "task_type": None, "r": r, "lora_alpha": r, "lora_dropout": 0.0,
                  "target_modules": sorted(modules), "rank_pattern": pattern, "alpha_pattern": pattern,
                  "fan_in_fan_out": bool(conv1d), "bias": "none", "use_rslora": False, "use_dora": False,
                  "modules_to_save": None, "init_lora_weights": True, "inference_mode": True}
        return config, weights

