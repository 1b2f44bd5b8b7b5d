"""Kept so plugins written against the flat builder layout still import: this is
``modkit.builder.export.exporter``."""
from modkit.builder.export.exporter import Exporter, positions_left  # noqa: F401
