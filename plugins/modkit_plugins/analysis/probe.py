"""The `probe` command: what a model's layers and attention heads encode (edge probing, heads)."""
from __future__ import annotations

import modkit


@modkit.hookimpl
def modkit_register_commands(register):
    register("probe", "modkit_plugins.analysis.probe_cli:probe",
             doc="Edge probing over layers (scalar mix, centre of gravity, expected layer) and attention heads.")
    register("probe-data", "modkit_plugins.analysis.probe_data:probe_data",
             doc="Convert annotated text (CoNLL-U, word/TAG, label,text CSV) into probing tasks.")
