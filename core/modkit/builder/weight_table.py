"""Kept so plugins written against the flat builder layout still import: this is
``modkit.builder.hf.weight_table``."""
from modkit.builder.hf.weight_table import Row, WeightTable  # noqa: F401
