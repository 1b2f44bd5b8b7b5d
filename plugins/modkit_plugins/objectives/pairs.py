"""Sentence pairs through a tokenizer's pair template, from ids (torch-free): what `nsp`
trains on and what pair tasks serve."""
from __future__ import annotations

import re

from modkit.segmentfile import has_paragraphs, paragraphs
from modkit.tokenization import truncate_pair

#: a sentence ends at . ! or ? after a character that is not one of them nor a space (so not at
#: reStructuredText's ".. note::" or an ellipsis), before a capital, a digit or an opening mark
_SENTENCE_END = re.compile(r"(?<=[^\s.!?][.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def documents(text: str) -> list[list[str]]:
    """Blank-line separated documents (one per line in a file without blank lines), each a
    list of sentences (see :data:`_SENTENCE_END`)::

        documents(".. note:: Read this. Then that...  and more!")
        -> [['.. note:: Read this.', 'Then that...  and more!']]
    """
    by_lines = not has_paragraphs(text)
    return [found for found in map(sentences, paragraphs(text, by_lines)) if found]


def sentences(document: str) -> list[str]:
    """The sentences of one document, its whitespace runs made single spaces (what a segment
    file of the corpus is split by: see :mod:`modkit.segmentfile`)."""
    return [s for s in _SENTENCE_END.split(" ".join(document.split())) if s]


def pair_ids(tokenizer, a: list[int], b: list[int] | None, max_length: int) -> tuple[list[int], list[int]]:
    """``[CLS] a [SEP] b [SEP]`` (the tokenizer's pair template; its single template when ``b``
    is None) and its segment ids, the longer text cut first to fit ``max_length``: the ids
    ``encode_plus`` gives for the texts."""
    template = tokenizer.template
    if b is None:
        pieces = template.single if template is not None else (("$A", 0),)
    else:
        pieces = template.pair if template is not None else (("$A", 0), ("$B", 1))
    added = sum(p not in ("$A", "$B") for p, _ in pieces)
    keep_a, keep_b = truncate_pair(a, b, max_length - added)
    ids, types = [], []
    for piece, type_id in pieces:
        part = a[:keep_a] if piece == "$A" else b[:keep_b] if piece == "$B" else [tokenizer.token_to_id(piece)]
        ids += part
        types += [type_id] * len(part)
    return ids, types
