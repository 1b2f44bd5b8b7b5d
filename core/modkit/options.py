"""The base of every component's options model."""
from __future__ import annotations

import difflib
from typing import Iterable

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Options of a component. Unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


def no_such_key(owner: str, key: str, known: Iterable[str], noun: str = "option") -> str:
    """What a user reads for a key its table does not take (pydantic's "Extra inputs are not
    permitted"), with the closest known key and every one it does take::

        lora takes no option 'rr' (did you mean 'r'?); it takes: r, alpha, targets, dropout
    """
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{owner} takes no {noun} {key!r}{hint}; it takes" + (f": {', '.join(known)}" if known else " none")
