"""Machinery shared by modkit's subword tokenizers: special tokens, splitting on them,
the word cache and Hugging Face ``added_tokens`` entries."""
from __future__ import annotations

import functools
import json
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import regex

from modkit import ArtifactError, Tokenizer

#: roles guessed from a token's text when a tokenizer.json does not record them
WELL_KNOWN_ROLES = {
    "[CLS]": ("cls",), "[SEP]": ("sep",), "[PAD]": ("pad",), "[MASK]": ("mask",),
    "[UNK]": ("unk",), "<|endoftext|>": ("eos",), "<|startoftext|>": ("bos",),
    "<|pad|>": ("pad",), "<|unk|>": ("unk",), "<start_of_text>": ("bos",),
    "<end_of_text>": ("eos",), "<s>": ("bos",), "</s>": ("eos",),
    "<pad>": ("pad",), "<unk>": ("unk",), "<mask>": ("mask",),
}
_CACHE_LIMIT = 1 << 18  # words; a cache this size holds a large corpus's vocabulary
# what a single_word token may not touch: Unicode \w (letters, marks, digits, connectors), as
# the Rust regex Hugging Face uses
_WORD_CHAR = regex.compile(r"\w")
_LEADING_SPACES = regex.compile(r"\s*")
_TRAILING_SPACES = regex.compile(r"\s+$")


class AddedToken(NamedTuple):
    """How an added token of a tokenizer.json is found in text (Hugging Face's flags)."""
    special: bool = True  # found only when special tokens are allowed; skipped by decode on request
    lstrip: bool = False  # a match takes the whitespace before it (RoBERTa's and BART's <mask>)
    rstrip: bool = False  # ... and after it
    single_word: bool = False  # not inside a word
    normalized: bool = False  # looked for in a second pass, in the text the first left


class SubwordTokenizer(Tokenizer):
    """A tokenizer with a vocabulary, special tokens by role and a per-word id cache.

    Subclasses implement :meth:`_word_ids` (one pre-tokenized word -> ids),
    :meth:`_words` (text -> pre-tokenized words) and :meth:`_decode_tokens`.
    """

    def __init__(self, vocab: dict[str, int], special_tokens: dict[str, str],
                 added: dict[str, AddedToken] | None = None):
        """``special_tokens``: role -> text. ``added``: a tokenizer.json's added tokens (text ->
        flags): special ones with or without a role, and plain ones, which are found in any
        text, as Hugging Face finds them."""
        self.vocab = dict(vocab)
        self.special_tokens = dict(special_tokens)
        self.added = {**{t: AddedToken() for t in special_tokens.values()}, **(added or {})}
        for text in self.added:
            self.vocab.setdefault(text, len(self.vocab))
        self.inverse = {i: t for t, i in self.vocab.items()}
        self._special_ids = {self.vocab[t] for t, a in self.added.items() if a.special}
        self._plain_ids = {self.vocab[t] for t, a in self.added.items() if not a.special}
        # Hugging Face's two passes: tokens matched in the text as given, then "normalized" ones
        self._passes_all = self._passes(self.added)  # special tokens allowed
        self._passes_plain = self._passes({t: a for t, a in self.added.items() if not a.special})
        self._cache: dict[str, list[int]] = {}

    @staticmethod
    def _passes(tokens: dict[str, AddedToken]) -> list[regex.Pattern]:
        out = []
        for normalized in (False, True):
            texts = sorted((t for t, a in tokens.items() if a.normalized == normalized), key=len, reverse=True)
            if texts:  # longest first: the leftmost-longest match, as Hugging Face's Aho-Corasick
                out.append(regex.compile("|".join(regex.escape(t) for t in texts)))
        return out

    # -- what subclasses provide -------------------------------------------------------
    def _words(self, text: str) -> list[str]:
        raise NotImplementedError

    def _word_ids(self, word: str) -> list[int]:
        raise NotImplementedError

    def _decode_tokens(self, tokens: list[str]) -> str:
        raise NotImplementedError

    # -- the Tokenizer interface ------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return max(self.inverse) + 1 if self.inverse else 0

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        if not (self._passes_all if allow_special else self._passes_plain):
            return self.encode_ordinary(text)
        ids: list[int] = []
        for segment, is_special, _, _ in self._segments_at(text, allow_special):
            if is_special:
                ids.append(self.vocab[segment])
            else:
                ids.extend(self.encode_ordinary(segment))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special-token strings treated as plain text."""
        return self._ids_of_words(self._words(text))

    def _ids_of_words(self, words: list[str]) -> list[int]:
        """Ids of pre-tokenized ``words``, each word's ids cached."""
        cache = self._cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        try:  # the per-word loop runs in C: map + chain over the cache
            return list(chain.from_iterable(map(cache.__getitem__, words)))
        except KeyError:
            for word in set(words).difference(cache):
                cache[word] = self._word_ids(word)
            return list(chain.from_iterable(map(cache.__getitem__, words)))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        parts: list[str] = []
        run: list[str] = []
        for i in ids:
            token = self._token_of(i)
            if int(i) in self._special_ids or int(i) in self._plain_ids:  # added tokens decode as their text
                if run:
                    parts.append(self._decode_tokens(run))
                    run = []
                if not (skip_special_tokens and int(i) in self._special_ids):
                    parts.append(token)
            else:
                run.append(token)
        if run:
            parts.append(self._decode_tokens(run))
        return "".join(parts)

    def _token_of(self, id: int) -> str:
        token = self.inverse.get(int(id))
        if token is None:
            raise ValueError(f"id {id} is not in the vocabulary (size {self.vocab_size})")
        return token

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, id: int) -> str | None:
        return self.inverse.get(int(id))

    def encode_with_offsets(self, text: str, *, allow_special: bool = False):
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for segment, is_special, base, end in self._segments_at(text, allow_special):
            if is_special:  # the span holds the whitespace an lstrip / rstrip token took
                ids.append(self.vocab[segment])
                offsets.append(self._added_span(text, base, end))
                continue
            for token_id, start, end in self._segment_spans(segment):
                ids.append(token_id)
                offsets.append((base + start, base + end))
        return ids, offsets

    def _added_span(self, text: str, start: int, end: int) -> tuple[int, int]:
        """The offsets of an added token that matched ``text[start:end]``."""
        return start, end

    def _segment_spans(self, segment: str) -> Iterator[tuple[int, int, int]]:
        """(id, start, end) of each token of a text with no special tokens in it."""
        raise NotImplementedError(f"{type(self).__name__} does not report offsets")

    def _segments_at(self, text: str, allow_special: bool) -> Iterator[tuple[str, bool, int, int]]:
        """(piece, is_added_token, start, end) in order: an added token's text with the span of
        its match (whitespace an lstrip / rstrip token took included), or a stretch of text.
        Special tokens are recognised only when allowed, plain added tokens always."""
        pieces = [(text, False, 0, len(text))]
        for pattern in self._passes_all if allow_special else self._passes_plain:
            pieces = [out for piece in pieces
                      for out in ([piece] if piece[1] else self._split(pattern, piece[0], piece[2]))]
        yield from pieces

    def _split(self, pattern: regex.Pattern, piece: str, base: int):
        """Hugging Face's AddedVocabulary.find_matches on one stretch of text."""
        offset = 0
        for match in pattern.finditer(piece):
            token, start, stop = match.group(), match.start(), match.end()
            flags = self.added[token]
            if flags.single_word and (_WORD_CHAR.match(piece[start - 1:start]) or _WORD_CHAR.match(piece[stop:stop + 1])):
                continue
            if flags.lstrip:  # not into what the previous token took
                start = max(len(_TRAILING_SPACES.sub("", piece[:start], count=1)), offset)
            if flags.rstrip:  # may reach into the next token's match, as in Hugging Face
                stop += len(_LEADING_SPACES.match(piece, stop).group())
            if offset < start:
                yield piece[offset:start], False, base + offset, base + start
            yield token, True, base + start, base + stop
            offset = stop
        if offset < len(piece):
            yield piece[offset:], False, base + offset, base + len(piece)

    # -- Hugging Face tokenizer.json pieces -------------------------------------------
    def _added_tokens_json(self) -> list[dict[str, Any]]:
        roles: dict[str, list[str]] = {}
        for role, text in self.special_tokens.items():
            roles.setdefault(text, []).append(role)
        return [
            {
                "id": self.vocab[text], "content": text, "single_word": a.single_word, "lstrip": a.lstrip,
                "rstrip": a.rstrip, "normalized": a.normalized, "special": a.special,
                "modkit_roles": sorted(roles.get(text, [])),  # Hugging Face ignores this key
            }
            for text, a in sorted(self.added.items(), key=lambda kv: self.vocab[kv[0]])
        ]


def special_tokens_from_json(doc: dict[str, Any]) -> dict[str, str]:
    """Roles of a tokenizer.json's special added tokens: recorded by modkit, else guessed."""
    roles: dict[str, str] = {}
    for entry in doc.get("added_tokens") or []:
        if not entry.get("special"):
            continue
        text = entry["content"]
        for role in entry.get("modkit_roles") or WELL_KNOWN_ROLES.get(text, ()):
            roles.setdefault(role, text)
    return roles


def added_from_json(doc: dict[str, Any], path: Path, *, normalizes: bool) -> dict[str, AddedToken]:
    """A tokenizer.json's added tokens and their flags. A plain (not special) one that Hugging
    Face matches in normalized text is refused when the tokenizer normalizes (lower-cases...):
    modkit matches added tokens in the text as given."""
    added = {}
    for e in doc.get("added_tokens") or []:
        if not e.get("special") and e.get("normalized", True) and normalizes:
            raise ArtifactError(f"{path}: added token {e['content']!r} is matched in normalized text "
                                "(\"normalized\": true, \"special\": false), which modkit does not support "
                                "for a tokenizer with a normalizer")
        added[e["content"]] = AddedToken(bool(e.get("special")), bool(e.get("lstrip")), bool(e.get("rstrip")),
                                         bool(e.get("single_word")), bool(e.get("normalized", not e.get("special"))))
    return added


def sentencepiece_style(doc: dict[str, Any]) -> bool:
    """Whether a tokenizer.json's BPE model is SentencePiece's (byte fallback, or ``▁`` for
    spaces through Metaspace), which the sentencepiece tokenizer reads rather than bpe."""
    model = doc["model"]
    uses_metaspace = "Metaspace" in json.dumps([doc.get("pre_tokenizer"), doc.get("decoder")])
    return bool(model.get("byte_fallback") or "modkit_sentencepiece" in model or uses_metaspace)


def read_tokenizer_json(path: Path) -> dict[str, Any] | None:
    """The parsed document if ``path`` looks like a tokenizer.json, else None. Treat it as
    read-only: it is cached, so the next plugin asked about the file does not parse it again.

    A ``.json`` file that is not valid JSON is an error rather than "not mine", so the user
    hears what is wrong with it.
    """
    if path.suffix != ".json" or not path.is_file():
        return None
    stat = path.stat()
    return _parse_tokenizer_json(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _parse_tokenizer_json(path: str, mtime_ns: int, size: int) -> dict[str, Any] | None:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e}); expected a tokenizer.json") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        return None
    return doc
