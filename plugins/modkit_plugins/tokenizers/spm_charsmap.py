"""Building a ``precompiled_charsmap`` for models modkit trains: the rule set (per code point,
from Python's ``unicodedata``) and the Darts double-array trie sentencepiece reads.

The rules map single code points; sentencepiece's own ``nmt_nfkc`` tables also compose
sequences (a letter and a combining mark become one character), so text with combining
sequences normalises differently under modkit's tables. Models written with them are named
``modkit_<rule>`` so no one mistakes them for sentencepiece's.
"""
from __future__ import annotations

import functools
import struct
import sys
import unicodedata

#: characters the NMT rules delete: C0/C1 controls other than the whitespace ones, and
#: zero-width format characters
_NMT_DELETED = {*range(0x01, 0x09), 0x0B, *range(0x0E, 0x20), *range(0x7F, 0x85), *range(0x86, 0xA0),
                0x200B, 0x200E, 0x200F, 0xFEFF, 0xFFFE, 0xFFFF}
_NMT_SPACES = {0x09, 0x0A, 0x0C, 0x0D, 0x85, 0x1680, 0x2028, 0x2029, 0x3000, *range(0x2000, 0x200B), 0x202F, 0x205F}
RULES = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")


@functools.lru_cache(maxsize=4)
def rule_table(rule: str) -> dict[str, str]:
    """Code point -> replacement for every code point the rule changes."""
    if rule == "identity":
        return {}
    nmt, casefold = rule.startswith("nmt_"), rule.endswith("_cf")
    table = {}
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code < 0xE000 or code == 0:  # a key cannot hold NUL: Darts ends keys with it
            continue
        char = chr(code)
        if nmt and code in _NMT_DELETED:
            out = ""
        elif nmt and code in _NMT_SPACES:
            out = " "
        else:
            out = unicodedata.normalize("NFKC", char)
            if casefold:
                out = unicodedata.normalize("NFKC", out.casefold())
        if out != char:
            table[char] = out
    return table


@functools.lru_cache(maxsize=4)
def charsmap_for(rule: str) -> bytes:
    """The precompiled charsmap of a rule; empty for identity."""
    return build_charsmap(rule_table(rule)) if rule != "identity" else b""


def build_charsmap(table: dict[str, str]) -> bytes:
    """A precompiled charsmap (``uint32 trie size | Darts units | replacements``) for ``table``.

    Each trie node is a unit whose children sit at ``base ^ byte``; a node with a key ending
    there has a leaf child at ``base ^ 0`` holding the replacement's offset. The unit stores
    ``node ^ base`` as its offset, so bases are chosen unique and small enough to encode.
    """
    replacements = bytearray()
    where: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for key, value in sorted(table.items()):
        if value not in where:
            where[value] = len(replacements)
            replacements += value.encode("utf-8") + b"\0"
        keys[key.encode("utf-8")] = where[value]
    # the trie as nested dicts of byte -> child; a value under -1
    root: dict = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[-1] = value
    units: list[int] = [0]
    used: set[int] = set()  # taken slots
    used.add(0)
    bases: set[int] = set()
    next_free = 1
    queue = [(0, root)]
    while queue:
        index, node = queue.pop()
        labels = sorted(0 if byte == -1 else byte for byte in node)
        slot = next_free  # try to put the first child in each free slot in turn
        while True:
            base = slot ^ labels[0]
            if slot not in used and base and base not in bases and all((base ^ label) not in used for label in labels):
                break
            slot += 1
        bases.add(base)
        offset = index ^ base
        if offset >= 1 << 21:
            raise ValueError("the charsmap is too large for this builder")
        units[index] |= offset << 10 | (256 if -1 in node else 0)
        for label in labels:
            slot = base ^ label
            used.add(slot)
            if slot >= len(units):
                units.extend([0] * (slot + 1 - len(units)))
        if -1 in node:
            units[base] = node[-1] | (1 << 31)
        for byte, child in node.items():
            if byte == -1:
                continue
            units[base ^ byte] = byte
            queue.append((base ^ byte, child))
        while next_free in used:
            next_free += 1
    units.extend([0] * (-len(units) % 256))  # sentencepiece wants whole blocks of 256 units
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)
