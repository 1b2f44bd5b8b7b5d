"""The `prefix` PEFT method: trained key/value prefixes in every attention layer (Li & Liang 2021)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

import modkit


class PrefixOptions(modkit.Options):
    length: int = Field(10, gt=0, description="Number of trained key/value vectors per attention layer.")
    projection: int = Field(0, ge=0, description="Hidden size of the reparameterisation MLP; 0 = train the "
                                                 "keys/values directly.")
    placement: Literal["peft", "all"] = Field(
        "peft", description="peft: every self-attention, but only the decoder's in an encoder-decoder (where "
                            "Hugging Face PEFT puts them); all: every self- and cross-attention (Li & Liang).")
    positions: Literal["none", "peft"] = Field(
        "none", description="none: the prefix has no position and tokens keep theirs; peft: the prefix takes the "
                            "first `length` positions, as in Hugging Face PEFT (whose folders need it).")


@modkit.hookimpl
def modkit_register_peft_methods(register):
    register("prefix", "modkit_plugins.peft.prefix_impl:PrefixTuning", options=PrefixOptions,
             doc="Prefix tuning: trained keys/values prepended in every attention layer; frozen to constants on merge.")
