"""Text of ids that include T5 sentinels past the tokenizer's vocabulary (torch-free)."""
from __future__ import annotations

import re
from typing import Sequence

_SENTINEL = re.compile(r"<extra_id_(\d+)>")


def decode_with_sentinels(tokenizer, ids: Sequence[int], sentinel_base: int | None, **options) -> str:
    """``tokenizer.decode``, with each id past the tokenizer's vocabulary written as the
    sentinel ``<extra_id_k>`` it stands for (``k = sentinel_base - id``)."""
    if sentinel_base is None:
        return tokenizer.decode(ids, **options)
    parts, run = [], []
    for i in ids:
        if i >= tokenizer.vocab_size:
            parts += [tokenizer.decode(run, **options), f"<extra_id_{sentinel_base - i}>"]
            run = []
        else:
            run.append(i)
    return "".join(parts + [tokenizer.decode(run, **options)])


def encode_with_sentinels(tokenizer, text: str, sentinel_base: int | None, *, allow_special: bool = False) -> list[int]:
    """``tokenizer.encode``, with each ``<extra_id_k>`` in the text as its sentinel id."""
    if sentinel_base is None:
        return tokenizer.encode(text, allow_special=allow_special)
    ids: list[int] = []
    for n, piece in enumerate(_SENTINEL.split(text)):
        ids += ([sentinel_base - int(piece)] if n % 2 else
                tokenizer.encode(piece, allow_special=allow_special) if piece else [])
    return ids
