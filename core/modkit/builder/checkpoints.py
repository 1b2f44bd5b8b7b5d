"""Kept so plugins written against the flat builder layout still import: this is
``modkit.builder.hf.convert``."""
from modkit.builder.hf.convert import assign_state, export_hf, format_for, load_hf, load_model, read_config, read_safetensors, save_hf  # noqa: F401
