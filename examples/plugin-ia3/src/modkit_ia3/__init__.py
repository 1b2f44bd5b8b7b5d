"""IA3 (Liu et al. 2022) as a third-party PEFT method: options and registration (no torch here)."""
from pydantic import Field

import modkit


class IA3Options(modkit.Options):
    targets: list[str] = Field(["attn.k", "attn.v", "ffn.down"],
                               description="Role patterns of the layers IA3 rescales.")
    feedforward: list[str] = Field(["ffn.down"],
                                   description="Of those, the roles whose input (the FFN's intermediate "
                                               "activation) is rescaled; the others' output is.")


@modkit.hookimpl
def modkit_register_peft_methods(register):
    register("ia3", "modkit_ia3.ia3:IA3", options=IA3Options,
             doc="IA3: learned vectors rescaling keys, values and the FFN's intermediate activations; merges.")
