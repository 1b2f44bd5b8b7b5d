"""The compiled SentencePiece passes (``_unigram_native.c``: the Unigram Viterbi pass and the
normaliser's fast path), where the install built them (hatch_build.py); None where it did
not, and the Python passes, with the same results, run instead."""
from __future__ import annotations

try:
    from . import _unigram_native as native
except ImportError:
    native = None
else:
    if getattr(native, "VERSION", None) != 5:  # built from older source: not to be trusted
        native = None

#: what a caller who asks for the compiled passes is told where they are not built
NOT_BUILT = "modkit's compiled SentencePiece passes are not built: reinstall modkit with a C compiler (hatch_build.py)"
