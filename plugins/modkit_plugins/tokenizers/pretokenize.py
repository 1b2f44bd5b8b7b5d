"""Pre-tokenization: the regexes that cut text into words, and GPT-2's byte alphabet."""
from __future__ import annotations

import functools
import html

import regex

#: GPT-2's pattern (tiktoken's ``gpt2`` encoding uses the same one)
GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
#: Hugging Face's ``Whitespace`` pre-tokenizer: runs of word characters or of punctuation
WHITESPACE_PATTERN = r"\w+|[^\w\s]+"
#: open_clip's SimpleTokenizer pattern, without its two special tokens (handled as specials)
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

PATTERNS = {"gpt2": GPT2_PATTERN, "whitespace": WHITESPACE_PATTERN, "clip": CLIP_PATTERN}


@functools.lru_cache(maxsize=None)
def compiled(name: str) -> regex.Pattern:
    flags = regex.IGNORECASE if name == "clip" else 0
    return regex.compile(PATTERNS[name], flags)


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes onto printable characters.

    Printable Latin-1 bytes map to themselves; the rest are shifted to U+0100 onwards, so
    every byte string becomes a string with no whitespace or control characters in it.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


@functools.lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def bytes_to_symbols(data: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in data)


def clip_clean(text: str) -> str:
    """open_clip's text cleaning: ftfy (when installed), HTML unescape, whitespace, lowercase."""
    try:
        import ftfy
    except ImportError:  # ftfy only repairs mojibake; clean text is unaffected
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()  # str.split's whitespace, as open_clip uses
