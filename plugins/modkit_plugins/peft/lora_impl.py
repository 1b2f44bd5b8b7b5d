"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update.

A starts Gaussian and B at zero, so a freshly wrapped model computes exactly what the base
did. :meth:`LoRALinear.delta_weight` is the one definition of the update; merge and unmerge
both go through it.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch
from torch import nn

from modkit.nn.blocks import iter_roles
from modkit.errors import ModkitError, UserError
from modkit.interfaces import PeftMethod


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
        if not torch.isfinite(merged).all():
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
        for parent, name, role in list(iter_roles(model)):
            if not any(fnmatchcase(role, pat) for pat in o.targets):
                continue
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
