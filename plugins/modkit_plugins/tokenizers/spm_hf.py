"""Hugging Face's pipeline for SentencePiece-style tokenizer.json files, as ``tokenizers`` runs
it: the normalizers, pre-tokenizers, model and decoders its SentencePiece converters write.

A tokenizer.json that Hugging Face converted from a ``.model`` encodes some text differently
from sentencepiece (its ``Precompiled`` normalizer works on grapheme clusters; its models use
doubles; decoding follows its decoders); modkit reading such a file gives Hugging Face's ids.
Every stage keeps, for each character, the position in the input it came from, so tokens get
offsets.
"""
from __future__ import annotations

import base64
from typing import Any, Callable, NamedTuple

import regex

from modkit import ArtifactError

from .spm_normalize import CharsMap
from .spm_segment import UNK_PENALTY, RankedBPE, build_trie
from .spm_unigram import Unigram

# what Rust's char::is_whitespace takes for whitespace (Unicode White_Space)
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_WHITESPACE_RUN = regex.compile(f"[{regex.escape(_WHITESPACE)}]+")
_GRAPHEME = regex.compile(r"\X")


class Aligned(NamedTuple):
    """Text with, for each character and one past the end, where in the input it came from."""
    text: str
    origin: list[int]

    @classmethod
    def of(cls, text: str, base: int = 0) -> Aligned:
        return cls(text, list(range(base, base + len(text) + 1)))

    def cut(self, start: int, end: int) -> Aligned:
        return Aligned(self.text[start:end], self.origin[start:end + 1])


def _rebuild(parts: list[tuple[str, int]], end: int) -> Aligned:
    """An Aligned from (text, origin of all its characters) parts."""
    text = "".join(p for p, _ in parts)
    origin = [o for p, o in parts for _ in p]
    return Aligned(text, origin + [end])


def _pattern(spec: dict[str, Any], where: str) -> regex.Pattern:
    if "String" in spec:
        return regex.compile(regex.escape(spec["String"]))
    if "Regex" in spec:  # Rust's \z is Python's \Z
        return regex.compile(spec["Regex"].replace(r"\z", r"\Z"))
    raise ArtifactError(f"{where}: unknown pattern {spec!r}")


def _replace(pattern: regex.Pattern, content: str, s: Aligned) -> Aligned:
    parts, at = [], 0
    for match in pattern.finditer(s.text):
        if match.start() > at:
            parts += [(c, o) for c, o in zip(s.text[at:match.start()], s.origin[at:match.start()])]
        if content:
            parts.append((content, s.origin[match.start()]))
        at = match.end()
    parts += [(c, o) for c, o in zip(s.text[at:], s.origin[at:len(s.text)])]
    return _rebuild(parts, s.origin[-1])


def _precompiled(charsmap: CharsMap, s: Aligned) -> Aligned:
    """Hugging Face's Precompiled normalizer: a grapheme cluster under 6 bytes whose start
    matches a key becomes that key's replacement whole; otherwise each character is looked
    up alone."""
    parts = []
    for match in _GRAPHEME.finditer(s.text):
        grapheme, start = match.group(), match.start()
        if len(grapheme.encode("utf-8")) < 6:
            replacement = charsmap.shortest(grapheme)
            if replacement is not None:
                parts.append((replacement, s.origin[start]))
                continue
        for k, char in enumerate(grapheme):
            replacement = charsmap.shortest(char)
            parts.append((char if replacement is None else replacement, s.origin[start + k]))
    return _rebuild(parts, s.origin[-1])


def _strip(left: bool, right: bool, s: Aligned) -> Aligned:
    text = s.text
    start = len(text) - len(text.lstrip(_WHITESPACE)) if left else 0
    end = len(text.rstrip(_WHITESPACE)) if right else len(text)
    if start >= end:
        return Aligned("", [s.origin[end]])
    return s.cut(start, end)


def normalizer(spec: dict[str, Any] | None, where: str) -> Callable[[Aligned], Aligned]:
    if not spec:
        return lambda s: s
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [normalizer(n, where) for n in spec.get("normalizers", [])]

        def sequence(s: Aligned) -> Aligned:
            for step in steps:
                s = step(s)
            return s
        return sequence
    if kind == "Precompiled":
        blob = base64.b64decode(spec.get("precompiled_charsmap") or "")
        if not blob:
            return lambda s: s
        charsmap = CharsMap(blob)
        return lambda s: _precompiled(charsmap, s)
    if kind == "Replace":
        pattern, content = _pattern(spec["pattern"], where), spec.get("content", "")
        return lambda s: _replace(pattern, content, s)
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)
        return lambda s: _strip(left, right, s)
    if kind == "Prepend":
        prefix = spec["prepend"]
        return lambda s: Aligned(prefix + s.text, [s.origin[0]] * len(prefix) + s.origin) if s.text else s
    raise ArtifactError(f"{where}: normalizer {kind!r} is not supported with a Unigram or byte-fallback BPE "
                        "model (supported: Sequence, Precompiled, Replace, Strip, Prepend)")


# -- pre-tokenizers: Aligned section (and whether it starts the text) -> words ------------------

def pre_tokenizer(spec: dict[str, Any] | None, where: str) -> Callable[[list[Aligned], bool], list[Aligned]]:
    if not spec:
        return lambda words, first: words
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [pre_tokenizer(p, where) for p in spec.get("pretokenizers", [])]

        def sequence(words: list[Aligned], first: bool) -> list[Aligned]:
            for step in steps:
                words = step(words, first)
            return words
        return sequence
    if kind == "Metaspace":
        return _metaspace(spec.get("replacement", "\u2581"), spec.get("prepend_scheme", "always"),
                          spec.get("split", True))
    if kind == "WhitespaceSplit":
        def whitespace_split(words: list[Aligned], first: bool) -> list[Aligned]:
            out = []
            for w in words:
                at = 0
                for match in _WHITESPACE_RUN.finditer(w.text):
                    if match.start() > at:
                        out.append(w.cut(at, match.start()))
                    at = match.end()
                if at < len(w.text):
                    out.append(w.cut(at, len(w.text)))
            return out
        return whitespace_split
    if kind == "Split" and spec.get("behavior") == "Isolated" and not spec.get("invert"):
        pattern = _pattern(spec["pattern"], where)

        def split(words: list[Aligned], first: bool) -> list[Aligned]:
            out = []
            for w in words:
                at = 0
                for match in pattern.finditer(w.text):
                    if match.start() > at:
                        out.append(w.cut(at, match.start()))
                    if match.end() > match.start():
                        out.append(w.cut(match.start(), match.end()))
                    at = match.end()
                if at < len(w.text):
                    out.append(w.cut(at, len(w.text)))
            return out
        return split
    raise ArtifactError(f"{where}: pre_tokenizer {kind!r} is not supported with a Unigram or byte-fallback BPE "
                        "model (supported: Sequence, Metaspace, WhitespaceSplit, Split with Isolated)")


def _metaspace(replacement: str, scheme: str, split: bool):
    def metaspace(words: list[Aligned], first: bool) -> list[Aligned]:
        out = []
        for n, w in enumerate(words):
            w = _replace(regex.compile(" "), replacement, w)
            prepend = scheme == "always" or (scheme == "first" and first and n == 0)
            if prepend and w.text and not w.text.startswith(replacement):
                w = Aligned(replacement + w.text, [w.origin[0]] + w.origin)
            if not split:
                out.append(w)
                continue
            at = 0
            for k in range(1, len(w.text)):  # each replacement starts a word (MergedWithNext)
                if w.text[k] == replacement:
                    out.append(w.cut(at, k))
                    at = k
            if w.text:
                out.append(w.cut(at, len(w.text)))
        return out
    return metaspace


# -- decoders: tokens -> tokens ----------------------------------------------------------------

def decoder(spec: dict[str, Any] | None, where: str) -> Callable[[list[str]], list[str]]:
    if not spec:
        return lambda tokens: [" ".join(tokens)]
    kind = spec.get("type")
    if kind == "Sequence":
        steps = [decoder(d, where) for d in spec.get("decoders", [])]

        def sequence(tokens: list[str]) -> list[str]:
            for step in steps:
                tokens = step(tokens)
            return tokens
        return sequence
    if kind == "Metaspace":
        replacement, scheme = spec.get("replacement", "\u2581"), spec.get("prepend_scheme", "always")

        def metaspace(tokens: list[str]) -> list[str]:
            out = [t.replace(replacement, " ") for t in tokens]
            if out and scheme != "never" and out[0].startswith(" "):
                out[0] = out[0][1:]
            return out
        return metaspace
    if kind == "Replace":
        pattern, content = _pattern(spec["pattern"], where), spec.get("content", "")
        return lambda tokens: [pattern.sub(content.replace("\\", "\\\\"), t) for t in tokens]
    if kind == "ByteFallback":
        return _byte_fallback
    if kind == "Fuse":
        return lambda tokens: ["".join(tokens)]
    if kind == "Strip":
        content, start, stop = spec.get("content", " "), spec.get("start", 0), spec.get("stop", 0)

        def strip(tokens: list[str]) -> list[str]:
            out = []
            for t in tokens:
                left = 0
                while left < start and left < len(t) and t[left] == content:
                    left += 1
                right = len(t)
                while len(t) - right < stop and right > left and t[right - 1] == content:
                    right -= 1
                out.append(t[left:right])
            return out
        return strip
    raise ArtifactError(f"{where}: decoder {kind!r} is not supported with a Unigram or byte-fallback BPE model "
                        "(supported: Sequence, Metaspace, Replace, ByteFallback, Fuse, Strip)")


_BYTE_TOKEN = regex.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_fallback(tokens: list[str]) -> list[str]:
    """Runs of ``<0xXX>`` tokens as their UTF-8 text, or one U+FFFD per byte when the run is
    not valid UTF-8 (Hugging Face's ByteFallback decoder)."""
    out, run = [], []

    def flush():
        if run:
            try:
                out.append(bytes(run).decode("utf-8"))
            except UnicodeDecodeError:
                out.extend("\ufffd" * len(run))
            run.clear()

    for token in tokens:
        match = _BYTE_TOKEN.fullmatch(token)
        if match:
            run.append(int(match.group(1), 16))
        else:
            flush()
            out.append(token)
    flush()
    return out


# -- models ----------------------------------------------------------------------------------

class HFModel:
    """A tokenizer.json's Unigram or BPE model on one pre-tokenized word: (start, end, id)
    spans, runs of unknown characters fused, bytes for them when byte_fallback allows."""

    def __init__(self, spec: dict[str, Any], vocab: dict[str, int], where: str):
        kind = spec.get("type")
        self.byte_fallback = bool(spec.get("byte_fallback"))
        self.vocab = vocab
        if kind == "Unigram":
            entries = spec["vocab"]
            scores = [float(score) for _, score in entries]
            unk_id = spec.get("unk_id")
            min_score = min(scores, default=0.0)
            self.unk_id = unk_id
            self.fuse_unk = True
            self.segmenter = Unigram(build_trie((piece, i) for i, (piece, _) in enumerate(entries)), scores,
                                     -1 if unk_id is None else unk_id, min_score - UNK_PENALTY, float32_paths=False)
            self.whole_words = False
        elif kind == "BPE":
            for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
                if spec.get(key):
                    raise ArtifactError(f"{where}: a BPE model with {key} is not read as a SentencePiece tokenizer")
            merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec.get("merges", [])]
            self.unk_id = vocab.get(spec["unk_token"]) if spec.get("unk_token") is not None else None
            self.fuse_unk = bool(spec.get("fuse_unk"))
            self.segmenter = RankedBPE(vocab, {m: r for r, m in enumerate(merges)}, -1 if self.unk_id is None else self.unk_id)
            self.whole_words = bool(spec.get("ignore_merges"))
        else:
            raise ArtifactError(f"{where}: model {kind!r} is not a SentencePiece model")

    def spans(self, word: str) -> list[tuple[int, int, int]]:
        if self.whole_words and word in self.vocab:
            return [(0, len(word), self.vocab[word])]
        out: list[tuple[int, int, int]] = []
        for start, end, piece_id in self.segmenter.segment(word):
            if piece_id != -1 and not (piece_id == self.unk_id and self._unknown(word[start:end])):
                out.append((start, end, piece_id))
            elif self.fuse_unk and out and out[-1][2] == -1:
                out[-1] = (out[-1][0], end, -1)
            else:
                out.append((start, end, -1))
        spans = []
        for start, end, piece_id in out:
            if piece_id != -1:
                spans.append((start, end, piece_id))
                continue
            byte_ids = [self.vocab.get(f"<0x{b:02X}>") for b in word[start:end].encode("utf-8")]
            if self.byte_fallback and None not in byte_ids:
                spans.extend((start, end, i) for i in byte_ids)
            elif self.unk_id is None:
                raise ArtifactError(f"{word[start:end]!r} is not in the vocabulary, which has no unknown token")
            else:
                spans.append((start, end, self.unk_id))
        return spans

    def _unknown(self, text: str) -> bool:
        """Whether the model's unk id at this place stands for unknown text (a Unigram
        unk node) rather than the text of the unk piece itself."""
        return text not in self.vocab
