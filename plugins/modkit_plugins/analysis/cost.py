"""The `cost` command: what training a model costs in FLOPs, hours, energy, CO2e and money."""
from __future__ import annotations

import modkit


@modkit.hookimpl
def modkit_register_commands(register):
    register("cost", "modkit_plugins.analysis.cost_cli:cost",
             doc="Training FLOPs, hours, energy, CO2e and cloud price of a spec, artifact or preset.")
