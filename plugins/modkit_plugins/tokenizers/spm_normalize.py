"""SentencePiece's normaliser: the precompiled character map, then whitespace handling.

A ``precompiled_charsmap`` is a Darts double-array trie over UTF-8 keys whose leaves point
into a blob of NUL-terminated replacements. sentencepiece replaces, at each position, the
longest key that starts there (user-defined symbols first, kept as they are), then drops
leading, trailing and repeated spaces and writes the rest as ``▁``. We read the trie once
into a dict of key -> replacement and match over characters, which gives the same result on
valid text: a key is a whole number of characters, so a byte-prefix match is a character one.
"""
from __future__ import annotations

import re
import struct
from typing import Iterable, NamedTuple

from modkit import ArtifactError

from .spm_proto import NormalizerSpec
from .spm_native import native

SPACE = "\u2581"  # ▁, what a space is written as inside pieces
_SPACE_RUNS = re.compile(" {2,}")


class FastTables(NamedTuple):
    translate: dict[int, str]  # each one-character key's replacement
    longer: re.Pattern | None  # finds where a longer key may start: a second after a first
    longer_in_ascii: bool  # whether ``longer`` can match ASCII text
    firsts: set[str]
    seconds: set[str]


class CharsMap:
    """A precompiled charsmap: the longest key at a position and its replacement.

    The blob is ``uint32 trie_size | trie units | replacements``. A Darts unit holds a label
    (low byte), a has-leaf bit (8) and an offset to its children (bits 10..31, scaled by bit
    9); a leaf holds its value (an offset into the replacements) in bits 0..30. The trie is
    walked over UTF-8 bytes, as sentencepiece walks it; only the characters that start a key
    are collected up front (the places worth a walk).
    """

    def __init__(self, blob: bytes):
        import numpy as np

        if len(blob) <= 4:
            raise ValueError("the charsmap is too short")
        (trie_size,) = struct.unpack_from("<I", blob, 0)
        if trie_size % 4 or 4 + trie_size > len(blob):
            raise ValueError(f"the charsmap's trie size {trie_size} does not fit its {len(blob)} bytes")
        units = np.frombuffer(blob, dtype="<u4", count=trie_size // 4, offset=4).astype(np.int64)
        self._replacements = blob[4 + trie_size:]
        offsets = (units >> 10) << ((units & (1 << 9)) >> 6)
        self._labels = (units & ((1 << 31) | 0xFF)).tolist()
        self._offsets = offsets.tolist()
        self._units = units.tolist()
        self._decoded: dict[int, str] = {}
        self.first_chars = self._first_chars(np, units, offsets)

    def _first_chars(self, np, units, offsets) -> set[str]:
        """The characters some key starts with: the trie's paths one UTF-8 character deep."""
        return {char for _, char, _ in self._next_chars(np, units, offsets, [int(offsets[0])])}

    @staticmethod
    def _next_chars(np, units, offsets, starts: list[int]) -> list[tuple[int, str, int]]:
        """(which start, character, base of the node it leads to) for each character that
        continues a key from the nodes whose children are at ``starts``."""
        labels = units & ((1 << 31) | 0xFF)
        byte_values = np.arange(1, 256, dtype=np.int64)
        bases = np.array(starts, dtype=np.int64)
        origins = list(range(len(starts)))
        keys: list[bytes] = [b""] * len(starts)
        found: list[tuple[int, str, int]] = []
        for _ in range(4):
            if not len(bases):
                break
            children = bases[:, None] ^ byte_values[None, :]
            inside = children < len(units)
            hit = inside & (labels[np.where(inside, children, 0)] == byte_values[None, :])
            rows, cols = np.nonzero(hit)
            child = children[rows, cols]
            next_bases, next_keys, next_origins = [], [], []
            for row, key, base in zip(rows.tolist(), (keys[r] + bytes((c + 1,)) for r, c in zip(rows.tolist(), cols.tolist())),
                                      (child ^ offsets[child]).tolist()):
                try:
                    found.append((origins[row], key.decode("utf-8"), base))
                except UnicodeDecodeError:  # not a whole character yet: go one byte deeper
                    next_bases.append(base)
                    next_keys.append(key)
                    next_origins.append(origins[row])
            bases, keys, origins = np.array(next_bases, dtype=np.int64), next_keys, next_origins
        return found

    def fast_tables(self) -> FastTables:
        """For normalising without a walk at every character: the replacement of every
        one-character key (a ``str.translate`` table), and where a key of two or more
        characters may start (a first character followed by a possible second)."""
        import numpy as np

        units = np.array(self._units, dtype=np.int64)
        offsets = np.array(self._offsets, dtype=np.int64)
        firsts = self._next_chars(np, units, offsets, [self._offsets[0]])
        single: dict[int, str] = {}
        for _, char, _ in firsts:
            found = self.match(char, 0)
            if found is not None and found[1] == 1:
                single[ord(char)] = found[0]
        seconds = self._next_chars(np, units, offsets, [base for _, _, base in firsts])
        if not seconds:
            return FastTables(single, None, False, set(), set())
        longer_firsts = {firsts[origin][1] for origin, _, _ in seconds}

        def klass(chars):
            return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"
        # the second character first: the regex engine then scans for that set alone (rare
        # characters, combining marks), where a leading first-character set (letters) would
        # stop it at every letter
        second = {char for _, char, _ in seconds}
        pattern = re.compile(f"{klass(second)}(?<={klass(longer_firsts)}{klass(second)})")
        return FastTables(single, pattern, any(char.isascii() for char in second), longer_firsts, second)

    def match(self, text: str, at: int) -> tuple[str, int] | None:
        """(replacement, length in characters) of the longest key at ``text[at:]``, or None."""
        units, labels, offsets = self._units, self._labels, self._offsets
        window = 8
        while True:
            key = text[at:at + window].encode("utf-8", "surrogatepass")
            node, best, walked_off = offsets[0], None, True
            for i, byte in enumerate(key):
                node ^= byte
                if node >= len(labels) or labels[node] != byte:
                    walked_off = False
                    break
                has_leaf = units[node] >> 8 & 1
                node ^= offsets[node]
                if has_leaf:
                    best = i + 1, units[node] & 0x7FFFFFFF
            if walked_off and at + window < len(text):
                window *= 4  # a key may run past the window: walk again over more text
                continue
            break
        if best is None:
            return None
        length, value = best
        return self._replacement(value), len(key[:length].decode("utf-8", "surrogatepass"))

    def shortest(self, text: str) -> str | None:
        """The replacement of the shortest key that starts ``text`` (Hugging Face's
        ``Precompiled`` takes the first prefix match), or None."""
        units, labels, offsets = self._units, self._labels, self._offsets
        node = offsets[0]
        for byte in text.encode("utf-8", "surrogatepass"):
            node ^= byte
            if node >= len(labels) or labels[node] != byte:
                return None
            has_leaf = units[node] >> 8 & 1
            node ^= offsets[node]
            if has_leaf:
                return self._replacement(units[node] & 0x7FFFFFFF)
        return None

    def _replacement(self, value: int) -> str:
        text = self._decoded.get(value)
        if text is None:
            end = self._replacements.find(b"\0", value)
            text = self._replacements[value:end if end >= 0 else None].decode("utf-8")
            self._decoded[value] = text
        return text


class _Unit(NamedTuple):
    text: str  # what the unit normalizes to
    start: int  # its span in the input
    end: int
    plain: bool  # a stretch of characters that map to themselves, with no space in it


class Normalizer:
    """sentencepiece's ``Normalizer`` for one ``NormalizerSpec``.

    ``user_defined``: symbols matched first at each position and kept as they are (the
    model's user-defined pieces; sentencepiece's prefix matcher).
    """

    def __init__(self, spec: NormalizerSpec, user_defined: Iterable[str] = (), *, where: str = "the model"):
        self.spec = spec
        try:
            self.charsmap = CharsMap(spec.precompiled_charsmap) if spec.precompiled_charsmap else None
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{where}: its precompiled_charsmap is corrupt ({e})") from None
        self.user_defined = frozenset(s for s in user_defined if s)
        self._longest: dict[str, int] = {}  # first character -> longest user-defined symbol from it
        for symbol in self.user_defined:
            self._longest[symbol[0]] = max(self._longest.get(symbol[0], 0), len(symbol))
        starts = set(self._longest) | {" "} | (self.charsmap.first_chars if self.charsmap else set())
        # the fast path: one-character replacements by str.translate, whitespace by regex; the
        # unit-by-unit walk where a longer key may match, or user-defined symbols are in play,
        # or a replacement holds two spaces (which unit-by-unit handling keeps)
        tables = self._tables = (self.charsmap.fast_tables() if self.charsmap
                                 else FastTables({}, None, False, set(), set()))
        self._translate, self._longer, self._longer_in_ascii = tables.translate, tables.longer, tables.longer_in_ascii
        self._fast = not self.user_defined and not any("  " in r for r in self._translate.values())
        self._compiled = self._compile()
        #: whether the compiled fast path runs (where it is built and the spec allows it)
        self.use_compiled = self._compiled is not None
        self._special = re.compile("[" + "".join(re.escape(c) for c in sorted(starts)) + "]")
        self._space = SPACE if spec.escape_whitespaces else " "

    def _match(self, text: str, at: int) -> tuple[str, int]:
        """What the unit at ``at`` normalizes to and its length: the longest user-defined
        symbol there, else the longest charsmap key, else the character itself."""
        for length in range(min(self._longest.get(text[at], 0), len(text) - at), 0, -1):
            if text[at:at + length] in self.user_defined:
                return text[at:at + length], length
        found = self.charsmap.match(text, at) if self.charsmap else None
        return found or (text[at], 1)

    def _units(self, text: str) -> list[_Unit]:
        units = []
        at, n = 0, len(text)
        search = self._special.search
        while at < n:
            found = search(text, at)
            stop = found.start() if found else n
            if stop > at:
                units.append(_Unit(text[at:stop], at, stop, True))
            if not found:
                break
            replacement, length = self._match(text, stop)
            units.append(_Unit(replacement, stop, stop + length, False))
            at = stop + length
        return units

    def _compile(self):
        """The fast path compiled, or None (not built, or user-defined symbols in play)."""
        if not (native and self._fast):
            return None
        spec, tables = self.spec, self._tables
        return native.Translator(tables.translate, sorted(map(ord, tables.firsts)), sorted(map(ord, tables.seconds)),
                                 spec.remove_extra_whitespaces, spec.escape_whitespaces, spec.add_dummy_prefix)

    def __getstate__(self) -> dict:  # the compiled translator is rebuilt, not pickled
        return {**self.__dict__, "_compiled": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._compiled = self._compile()
        self.use_compiled = self.use_compiled and self._compiled is not None

    def normalize(self, text: str) -> str:
        if self.use_compiled:
            out = self._compiled.normalize(text)
            return out if out is not None else self.normalize_aligned(text)[0]
        longer = self._longer
        if not self._fast or (longer is not None and (self._longer_in_ascii or not text.isascii())
                              and longer.search(text)):
            return self.normalize_aligned(text)[0]
        spec = self.spec
        out = text.translate(self._translate)
        if spec.remove_extra_whitespaces:
            if "  " in out:
                out = _SPACE_RUNS.sub(" ", out)
            out = out.lstrip(" ")
        if spec.escape_whitespaces:
            out = out.replace(" ", SPACE)
        if spec.add_dummy_prefix and (out if spec.remove_extra_whitespaces else text):
            out = self._space + out
        return out.rstrip(self._space) if spec.remove_extra_whitespaces else out

    def normalize_aligned(self, text: str) -> tuple[str, list[int]]:
        """The normalized text and, for each of its characters and one past the end, the
        position in ``text`` it comes from (sentencepiece's ``norm_to_orig``, in characters)."""
        spec, space = self.spec, self._space
        remove_extra = spec.remove_extra_whitespaces
        units = self._units(text)
        first = 0
        if remove_extra:  # leading spaces go
            while first < len(units) and units[first].text == " ":
                first += 1
        if first == len(units):
            return "", [len(text)]
        out: list[str] = []
        origin: list[int] = []
        if spec.add_dummy_prefix:
            out.append(space)
            origin.append(units[first].start)
        is_prev_space = remove_extra
        for unit in units[first:]:
            piece = unit.text
            if unit.plain:
                out.append(piece)
                origin.extend(range(unit.start, unit.end))
                is_prev_space = False
                continue
            if is_prev_space and remove_extra:
                piece = piece.lstrip(" ")
            if piece:
                is_prev_space = piece.endswith(" ")
                if spec.escape_whitespaces:
                    piece = piece.replace(" ", SPACE)
                out.append(piece)
                origin.extend([unit.start] * len(piece))
            if not remove_extra:
                is_prev_space = False
        normalized = "".join(out)
        end = len(text)
        if remove_extra:  # trailing spaces go
            kept = len(normalized.rstrip(space))
            if kept < len(normalized):
                end = origin[kept]
                normalized, origin = normalized[:kept], origin[:kept]
        origin.append(end)
        return normalized, origin
