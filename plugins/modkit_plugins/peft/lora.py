"""The `lora` PEFT method: W0 + (alpha/r)·B·A on the linear layers whose role matches."""
from __future__ import annotations

from pydantic import Field, field_validator

import modkit


class LoRAOptions(modkit.Options):
    r: int = Field(8, gt=0, description="Rank of the update B·A.")
    alpha: float = Field(16.0, gt=0, description="Scale numerator: the update is multiplied by alpha / r.")
    targets: list[str] = Field(["attn.q", "attn.v"], min_length=1,
                               description="Role patterns to wrap, e.g. attn.q, attn.*, ffn.*, *.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA branch's input.")

    @field_validator("targets")
    @classmethod
    def _roles_look_like_roles(cls, targets: list[str]) -> list[str]:
        for t in targets:
            if t != "*" and "." not in t:
                raise ValueError(f"{t!r} is not a role pattern like 'attn.q', 'cross.*' or 'ffn.up'")
        return targets


@modkit.hookimpl
def modkit_register_peft_methods(register):
    register("lora", "modkit_plugins.peft.lora_impl:LoRA", options=LoRAOptions,
             doc="Low-rank adapters on role-matched linear layers; merge into the base weights for export.")
