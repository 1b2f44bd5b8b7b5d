"""Kept so plugins written against the flat builder layout still import: this is
``modkit.builder.export.seq2seq``."""
from modkit.builder.export.seq2seq import export_seq2seq  # noqa: F401
