"""BERT's basic tokenizer, as Hugging Face ``tokenizers`` does it (BertNormalizer followed by
BertPreTokenizer): drop control characters, turn whitespace into spaces, put spaces around
CJK ideographs, strip accents, lower-case, then split on whitespace and around punctuation.
"""
from __future__ import annotations

import re
import unicodedata

import regex

from .pretokenize import lowercase

# CJK Unified Ideographs blocks, as in Hugging Face's is_chinese_char: its Extension E range
# starts at U+2B920, not U+2B820 as in BERT's original _is_chinese_char, so U+2B820..U+2B91F
# stay inside words there; modkit follows Hugging Face, the reference users compare with
_CJK = "\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f" \
       "\U0002b740-\U0002b81f\U0002b920-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f"
# control, format and private-use characters (not \t \n \r), NUL and U+FFFD are removed
# before whitespace is replaced; unassigned code points stay, as in Hugging Face's
_REMOVED = regex.compile(r"[\x00\ufffd]|(?![\t\n\r])[\p{Cc}\p{Cf}\p{Co}]")
_WHITESPACE = regex.compile(r"[\t\n\r\p{White_Space}]")
_CJK_CHAR = regex.compile(f"([{_CJK}])")
_MARKS = regex.compile(r"\p{Mn}")
# a word: a run of non-space non-punctuation characters, or one punctuation character
# (punctuation: ASCII punctuation or Unicode category P*)
_WORD = regex.compile(r"[^\s\p{P}!-/:-@\[-`{-~]+|[\p{P}!-/:-@\[-`{-~]", regex.V1)


# ASCII text needs only this: drop control characters, lower-case (a single translate)
_ASCII_CONTROLS = [c for c in range(0x80) if c < 0x20 and chr(c) not in "\t\n\r" or c == 0x7F]
_ASCII_CLEAN = {c: None for c in _ASCII_CONTROLS}
_ASCII_CLEAN_LOWER = {**_ASCII_CLEAN, **{c: c + 32 for c in range(ord("A"), ord("Z") + 1)}}
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
_ASCII_WORD = re.compile(rf"[^\s{_ASCII_PUNCT}]+|[{_ASCII_PUNCT}]")


def normalize(text: str, *, clean_text=True, cjk=True, strip_accents=True, lower=True) -> str:
    if clean_text and text.isascii():
        return text.translate(_ASCII_CLEAN_LOWER if lower else _ASCII_CLEAN)
    if clean_text:
        text = _WHITESPACE.sub(" ", _REMOVED.sub("", text))
    if cjk:
        text = _CJK_CHAR.sub(r" \1 ", text)
    if strip_accents and not text.isascii():
        text = _MARKS.sub("", unicodedata.normalize("NFD", text))
    if lower:
        text = lowercase(text)
    return text


def normalize_aligned(text: str, **flags) -> tuple[str, list[int]]:
    """``normalize`` one character at a time, with the original index of each output char."""
    out: list[str] = []
    origin: list[int] = []
    for i, c in enumerate(text):
        piece = normalize(c, **flags)
        out.append(piece)
        origin.extend([i] * len(piece))
    return "".join(out), origin


def words(text: str) -> list[str]:
    return _ASCII_WORD.findall(text) if text.isascii() else _WORD.findall(text)


def word_spans(text: str):
    return ((m.group(), m.start()) for m in _WORD.finditer(text))
