"""Machinery shared by modkit's subword tokenizers: special tokens, splitting on them,
the word cache and Hugging Face ``added_tokens`` entries."""
from __future__ import annotations

import functools
import json
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Sequence

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


class SubwordTokenizer(Tokenizer):
    """A tokenizer with a vocabulary, special tokens by role and a per-word id cache.

    Subclasses implement :meth:`_word_ids` (one pre-tokenized word -> ids),
    :meth:`_words` (text -> pre-tokenized words) and :meth:`_decode_tokens`.
    """

    def __init__(self, vocab: dict[str, int], special_tokens: dict[str, str],
                 special_strip: dict[str, tuple[bool, bool]] | None = None):
        self.vocab = dict(vocab)
        for text in special_tokens.values():
            self.vocab.setdefault(text, len(self.vocab))
        self.special_tokens = dict(special_tokens)
        #: special token text -> (lstrip, rstrip): whether a match also takes the whitespace
        #: before / after it, as Hugging Face's added tokens do (RoBERTa's and BART's <mask>)
        self.special_strip = {t: (bool(l), bool(r)) for t, (l, r) in (special_strip or {}).items()
                              if t in special_tokens.values() and (l or r)}
        self.inverse = {i: t for t, i in self.vocab.items()}
        self._special_ids = {self.vocab[t] for t in special_tokens.values()}
        texts = sorted(set(special_tokens.values()), key=len, reverse=True)
        self._special_split = regex.compile("(?|" + "|".join(self._special_pattern(t) for t in texts) + ")") \
            if texts else None
        self._cache: dict[str, list[int]] = {}

    def _special_pattern(self, text: str) -> str:
        lstrip, rstrip = self.special_strip.get(text, (False, False))
        return (r"\s*" if lstrip else "") + "(" + regex.escape(text) + ")" + (r"\s*" if rstrip else "")

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
        if not allow_special or self._special_split is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        for segment, is_special, _ in self._segments_at(text, allow_special):
            if is_special:
                ids.append(self.vocab[segment])
            else:
                ids.extend(self.encode_ordinary(segment))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special-token strings treated as plain text."""
        cache = self._cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        words = self._words(text)
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
            if int(i) in self._special_ids:
                if run:
                    parts.append(self._decode_tokens(run))
                    run = []
                if not skip_special_tokens:
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
        for segment, is_special, base in self._segments_at(text, allow_special):
            if is_special:
                ids.append(self.vocab[segment])
                offsets.append((base, base + len(segment)))
                continue
            for token_id, start, end in self._segment_spans(segment):
                ids.append(token_id)
                offsets.append((base + start, base + end))
        return ids, offsets

    def _segment_spans(self, segment: str) -> Iterator[tuple[int, int, int]]:
        """(id, start, end) of each token of a text with no special tokens in it."""
        raise NotImplementedError(f"{type(self).__name__} does not report offsets")

    def _segments_at(self, text: str, allow_special: bool) -> Iterator[tuple[str, bool, int]]:
        """(piece, is_special, start) in order; specials are recognised only when allowed."""
        if not allow_special or self._special_split is None:
            yield text, False, 0
            return
        start = 0
        for match in self._special_split.finditer(text):
            if match.start() > start:
                yield text[start:match.start()], False, start
            yield match.group(1), True, match.start(1)
            start = match.end()  # whitespace a stripping special token took is in no segment
        if start < len(text):
            yield text[start:], False, start

    # -- Hugging Face tokenizer.json pieces -------------------------------------------
    def _added_tokens_json(self) -> list[dict[str, Any]]:
        roles: dict[str, list[str]] = {}
        for role, text in self.special_tokens.items():
            roles.setdefault(text, []).append(role)
        return [
            {
                "id": self.vocab[text], "content": text, "single_word": False,
                "lstrip": self.special_strip.get(text, (False, False))[0],
                "rstrip": self.special_strip.get(text, (False, False))[1], "normalized": False, "special": True,
                "modkit_roles": sorted(role_list),  # Hugging Face ignores this key
            }
            for text, role_list in sorted(roles.items(), key=lambda kv: self.vocab[kv[0]])
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


def special_strip_from_json(doc: dict[str, Any]) -> dict[str, tuple[bool, bool]]:
    """(lstrip, rstrip) of each special added token of a tokenizer.json."""
    return {e["content"]: (bool(e.get("lstrip")), bool(e.get("rstrip")))
            for e in doc.get("added_tokens") or [] if e.get("special")}


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
