"""IA3 (Liu et al. 2022, "(IA)^3"): learned vectors that rescale keys, values and the
feed-forward's intermediate activations. y = l ⊙ (W x + b) on ``attn.k``/``attn.v`` (the
output), y = W (l ⊙ x) + b on ``ffn.down`` (its input, the activations), l trained from ones,
as Hugging Face PEFT's IA3 (``feedforward_modules`` are the input-scaled ones)."""
from __future__ import annotations

import torch
from torch import nn

import modkit
from modkit.interfaces import PeftMethod
from modkit.nn.blocks import iter_roles, match_roles, role_matches


def innermost_linear(layer: nn.Module) -> nn.Linear:
    while not isinstance(layer, nn.Linear):  # through other methods' wrappers
        layer = layer.base
    return layer


class IA3Vector(nn.Module):
    """The trained vector alone: what `apply` returns, so that only it trains (the wrapper also
    holds the frozen layer)."""

    def __init__(self, size: int, like: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(size, device=like.device, dtype=like.dtype))


class IA3Linear(nn.Module):
    """In a layer's place: keeps its role and holds it as ``.base``, so other methods stack."""

    def __init__(self, base: nn.Module, scale_input: bool):
        super().__init__()
        linear = innermost_linear(base)
        self.base = base
        self.modkit_role = base.modkit_role
        self.scale_input = scale_input
        self.ia3 = IA3Vector(linear.in_features if scale_input else linear.out_features, linear.weight)
        self.saved: tuple | None = None  # the base's weight and bias before merge(), while merged

    def forward(self, x):
        if self.saved is not None:
            return self.base(x)
        scale = self.ia3.scale
        return self.base(x * scale) if self.scale_input else self.base(x) * scale

    @torch.no_grad()
    def merge(self) -> None:
        w, b = self.base.weight, self.base.bias
        self.saved = (w.clone(), None if b is None else b.clone())
        scale = self.ia3.scale.to(w.dtype)
        if self.scale_input:
            w.mul_(scale)  # W diag(l)
        else:
            w.mul_(scale[:, None])  # diag(l) W and l ⊙ b
            if b is not None:
                b.mul_(scale)

    @torch.no_grad()
    def unmerge(self) -> None:
        w, b = self.saved
        self.base.weight.copy_(w)
        if b is not None:
            self.base.bias.copy_(b)
        self.saved = None


class IA3(PeftMethod):
    def apply(self, backbone: nn.Module) -> list[nn.Module]:
        o = self.options
        self._wrapped: list[IA3Linear] = []
        for parent, attribute, role in match_roles(backbone, o.targets):
            layer = inner = getattr(parent, attribute)
            while not isinstance(inner, nn.Linear):
                if isinstance(inner, IA3Linear):
                    raise modkit.UserError(f"ia3: {role} already has an ia3")
                inner = inner.base
            wrapper = IA3Linear(layer, role_matches(role, o.feedforward))
            setattr(parent, attribute, wrapper)
            self._wrapped.append(wrapper)
        if not self._wrapped:
            roles = sorted({role for _, _, role in iter_roles(backbone)})
            raise modkit.UserError(f"ia3: targets {o.targets} match no layer; roles here: {', '.join(roles)}")
        return [w.ia3 for w in self._wrapped]

    def merge(self, backbone: nn.Module) -> None:
        """Fold every vector into its linear layer and put the layer back in the wrapper's place."""
        mine = {id(w) for w in getattr(self, "_wrapped", [])}
        for parent in list(backbone.modules()):
            for attribute, child in list(parent.named_children()):
                if id(child) not in mine:
                    continue
                if not isinstance(child.base, nn.Linear):
                    # LoRA applied after ia3 sits inside it; folding l into W alone would leave
                    # LoRA's update unscaled, and only LoRA knows how to scale it
                    raise modkit.UserError(
                        f"ia3: cannot merge into {child.modkit_role}, which also has a {type(child.base).__name__} "
                        "inside; list ia3 after that method, give them different targets, or keep both "
                        "unmerged with [export] merge = false")
                child.merge()
                setattr(parent, attribute, child.base)
