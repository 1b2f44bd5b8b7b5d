"""Kept so plugins written against the flat builder layout still import: this is
``modkit.builder.hf.peft_folders``."""
from modkit.builder.hf.peft_folders import PEFT_PREFIX, apply_peft_folder, export_peft, find_in_hf_weights, match_hf_modules, match_hf_parent, read_peft_folder  # noqa: F401
