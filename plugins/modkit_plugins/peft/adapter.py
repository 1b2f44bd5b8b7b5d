"""The `adapter` PEFT method: Houlsby bottleneck adapters on the outputs of role-matched layers."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

import modkit

#: where each placement puts adapters when ``targets`` is not given
PLACEMENTS = {"houlsby": ["attn.o", "ffn.down"], "pfeiffer": ["ffn.down"]}


class AdapterOptions(modkit.Options):
    bottleneck: int = Field(64, gt=0, description="Hidden size m of the bottleneck d -> m -> d.")
    activation: Literal["relu", "gelu", "gelu_new", "silu", "swish", "tanh"] = Field(
        "relu", description="Nonlinearity between the down and up projections.")
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="houlsby: after attn.o and ffn.down; pfeiffer: after ffn.down only.")
    targets: list[str] | None = Field(
        None, min_length=1, description="Role patterns whose outputs get an adapter (e.g. attn.o, cross.o, "
                                        "ffn.down); default: those of the placement.")
    train_layer_norms: bool = Field(False, description="Also train the model's layer norms, as Houlsby did.")

    @field_validator("targets")
    @classmethod
    def _roles_look_like_roles(cls, targets: list[str] | None) -> list[str] | None:
        for t in targets or []:
            if t != "*" and "." not in t:
                raise ValueError(f"{t!r} is not a role pattern like 'attn.o', 'cross.o' or 'ffn.down'")
        return targets

    def roles(self) -> list[str]:
        """The role patterns adapters go after: ``targets``, or the placement's."""
        return self.targets or PLACEMENTS[self.placement]


@modkit.hookimpl
def modkit_register_peft_methods(register):
    register("adapter", "modkit_plugins.peft.adapter_impl:Adapters", options=AdapterOptions,
             doc="Houlsby bottleneck adapters (d->m->d, residual) after attention and feed-forward; kept as modules.")
