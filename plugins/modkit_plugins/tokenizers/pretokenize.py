"""Pre-tokenization: the regexes that cut text into words, and GPT-2's byte alphabet."""
from __future__ import annotations

import functools
import html
import re

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


# GPT-2's pattern restricted to ASCII, for the stdlib `re` engine, which is about twice as
# fast as `regex` on it. \s is Unicode White_Space, which in ASCII is exactly these six.
_ASCII_SPACE = r"\t\n\x0b\x0c\r "
_ASCII_GPT2 = re.compile(
    rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_ASCII_SPACE}A-Za-z0-9]+"""
    rf"""|[{_ASCII_SPACE}]+(?![^{_ASCII_SPACE}])|[{_ASCII_SPACE}]+"""
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# No GPT-2 word spans a newline that follows a visible ASCII character: text cut there
# pre-tokenizes as the whole does.
_SAFE_CUT = re.compile(r"(?<=[!-~])\n")


def gpt2_words(text: str) -> list[str]:
    """GPT-2 pre-tokenization: ASCII stretches by `re`, the lines around non-ASCII by `regex`."""
    if text.isascii():
        return _ASCII_GPT2.findall(text)
    full = compiled("gpt2")
    words: list[str] = []
    pos = 0
    for run in _NON_ASCII.finditer(text):
        if run.start() < pos:
            continue  # inside the previous non-ASCII stretch
        start = text.rfind("\n", pos, run.start())
        while start > 0 and not "!" <= text[start - 1] <= "~":
            start = text.rfind("\n", pos, start)
        start = max(start, pos)
        after = _SAFE_CUT.search(text, run.end())
        end = after.start() if after else len(text)
        words += _ASCII_GPT2.findall(text, pos, start)
        words += full.findall(text, start, end)
        pos = end
    words += _ASCII_GPT2.findall(text, pos)
    return words


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
    # latin-1 turns each byte into the character of the same number; translate maps those
    return data.decode("latin-1").translate(_byte_table())


@functools.lru_cache(maxsize=1)
def _byte_table() -> dict[int, str]:
    return {b: c for b, c in byte_to_unicode().items() if chr(b) != c}


def lowercase(text: str) -> str:
    """Character-by-character lower case, as Rust's ``char::to_lowercase`` gives: unlike
    ``str.lower``, a final capital sigma becomes σ, not ς."""
    lowered = text.lower()
    if "\u03a3" in text:
        lowered = "".join(c.lower() for c in text)
    return lowered


def lowercase_aligned(text: str) -> tuple[str, list[int]]:
    """``lowercase`` with the original index of every output character."""
    out: list[str] = []
    origin: list[int] = []
    for i, c in enumerate(text):
        lower = c.lower()
        out.append(lower)
        origin.extend([i] * len(lower))
    return "".join(out), origin


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
