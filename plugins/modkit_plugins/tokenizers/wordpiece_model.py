"""The ``wordpiece`` tokenizer: BERT's basic tokenizer, then greedy longest-match-first."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modkit import ArtifactError
from modkit.tokenization import Template

from . import bert_basic
from .base import (SubwordTokenizer, WELL_KNOWN_ROLES, read_tokenizer_json, special_strip_from_json,
                   special_tokens_from_json)
from .bpe_train import count_words, learn_merges
from .wordpiece import WordPieceOptions

PREFIX = "##"
# Hugging Face's WordPiece decoder drops the space it put before these, token by token
_CLEANED = {" .": ".", " ?": "?", " !": "!", " ,": ","}


def bert_template(special_tokens: dict[str, str]) -> Template | None:
    cls_text, sep = special_tokens.get("cls"), special_tokens.get("sep")
    if cls_text is None or sep is None:
        return None
    return Template(((cls_text, 0), ("$A", 0), (sep, 0)),
                    ((cls_text, 0), ("$A", 0), (sep, 0), ("$B", 1), (sep, 1)))


class WordPieceTokenizer(SubwordTokenizer):
    def __init__(
        self,
        vocab: dict[str, int],
        *,
        special_tokens: dict[str, str] | None = None,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
        max_input_chars_per_word: int = 100,
        template: Template | None = None,
        special_strip: dict[str, tuple[bool, bool]] | None = None,
    ):
        special_tokens = dict(special_tokens or {})
        super().__init__(vocab, special_tokens, special_strip)
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.handle_chinese_chars = handle_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word
        self.template = template or bert_template(special_tokens)
        self._unk_id = self.special_id("unk")
        if self._unk_id is None:
            raise ArtifactError("a WordPiece vocabulary needs an 'unk' special token")
        self._flags = dict(clean_text=True, cjk=handle_chinese_chars,
                           strip_accents=self.strip_accents, lower=lowercase)

    # -- encoding -----------------------------------------------------------------------
    def _words(self, text: str) -> list[str]:
        return bert_basic.words(bert_basic.normalize(text, **self._flags))

    def _pieces(self, word: str) -> list[str] | None:
        """Greedy longest-match-first pieces of ``word``; None when some part matches nothing."""
        if len(word) > self.max_input_chars_per_word:
            return None
        vocab = self.vocab
        pieces = []
        start, n = 0, len(word)
        while start < n:
            end = n
            while end > start:
                piece = word[start:end] if start == 0 else PREFIX + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            if end == start:
                return None
            pieces.append(piece)
            start = end
        return pieces

    def _word_ids(self, word: str) -> list[int]:
        pieces = self._pieces(word)
        return [self._unk_id] if pieces is None else [self.vocab[p] for p in pieces]

    def _segment_spans(self, segment: str):
        normalized, origin = bert_basic.normalize_aligned(segment, **self._flags)
        for word, start in bert_basic.word_spans(normalized):
            pieces = self._pieces(word)
            if pieces is None:
                yield self._unk_id, origin[start], origin[start + len(word) - 1] + 1
                continue
            at = start
            for piece in pieces:
                length = len(piece) - (len(PREFIX) if at > start else 0)
                yield self.vocab[piece], origin[at], origin[at + length - 1] + 1
                at += length

    def decode(self, ids, *, skip_special_tokens: bool = False) -> str:
        # as Hugging Face's WordPiece decoder: special tokens are words like the others, so
        # a space separates them from their neighbours (and stays when they are skipped)
        special = self._special_ids
        return self._decode_tokens([self._token_of(i) for i in ids
                                    if not (skip_special_tokens and int(i) in special)])

    def _decode_tokens(self, tokens: list[str]) -> str:
        parts = tokens[:1]
        for token in tokens[1:]:
            token = token[len(PREFIX):] if token.startswith(PREFIX) else " " + token
            parts.append(_CLEANED.get(token, token))
        return "".join(parts)

    # -- training -----------------------------------------------------------------------
    @classmethod
    def train(cls, files, options: WordPieceOptions | None = None, progress=None):
        """Learn pieces as BPE merges over characters, with '##' marking a word's inside."""
        options = options or WordPieceOptions()
        shell = cls({t: i for i, t in enumerate(options.special_tokens.values())},
                    special_tokens=options.special_tokens, lowercase=options.lowercase,
                    strip_accents=options.strip_accents,
                    handle_chinese_chars=options.handle_chinese_chars)
        word_counts = count_words(files, shell._words)
        words: dict[tuple[str, ...], int] = {}
        for word, count in word_counts.items():
            symbols = (word[0], *(PREFIX + c for c in word[1:]))
            words[symbols] = words.get(symbols, 0) + count
        specials = list(dict.fromkeys(options.special_tokens.values()))
        tokens, _ = learn_merges(words, [], options.vocab_size - len(specials),
                                 options.min_frequency, progress, join=_join_pieces)
        vocab = {t: i for i, t in enumerate(specials)}
        for token in tokens:
            vocab.setdefault(token, len(vocab))
        return cls(vocab, special_tokens=options.special_tokens, lowercase=options.lowercase,
                   strip_accents=options.strip_accents,
                   handle_chinese_chars=options.handle_chinese_chars,
                   max_input_chars_per_word=options.max_input_chars_per_word)

    # -- files ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": self._added_tokens_json(),
            "normalizer": {"type": "BertNormalizer", "clean_text": True,
                           "handle_chinese_chars": self.handle_chinese_chars,
                           "strip_accents": self.strip_accents, "lowercase": self.lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": self.template.to_json(self.token_to_id) if self.template else None,
            "decoder": {"type": "WordPiece", "prefix": PREFIX, "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": self.special_tokens["unk"],
                      "continuing_subword_prefix": PREFIX,
                      "max_input_chars_per_word": self.max_input_chars_per_word,
                      "vocab": self.vocab},
        }

    @classmethod
    def from_file(cls, path: Path):
        path = Path(path)
        if path.is_dir():
            return cls.from_file(path / "vocab.txt") if (path / "vocab.txt").is_file() else None
        if path.name.endswith(".txt") and path.is_file() and not path.name.endswith("merges.txt"):
            return _from_vocab_txt(cls, path)
        doc = read_tokenizer_json(path)
        if doc is None or doc["model"].get("type") != "WordPiece":
            return None
        return _from_json(cls, doc, path)


def _join_pieces(left: str, right: str) -> str:
    return left + right[len(PREFIX):] if right.startswith(PREFIX) else left + right


def _from_vocab_txt(cls, path: Path):
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: not UTF-8 text; expected a BERT vocab.txt") from None
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    specials = {}
    for token in vocab:
        for role in WELL_KNOWN_ROLES.get(token, ()):
            specials.setdefault(role, token)
    if "unk" not in specials:
        raise ArtifactError(f"{path}: no [UNK] token; expected a BERT vocab.txt (one token a line)")
    # vocab.txt does not say whether the model is uncased; an uncased vocabulary has no
    # upper-case letters outside its special tokens
    cased = any(t.lower() != t for t in vocab if t not in WELL_KNOWN_ROLES)
    return cls(vocab, special_tokens=specials, lowercase=not cased)


def _from_json(cls, doc: dict[str, Any], path: Path):
    model = doc["model"]
    normalizer = doc.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
        raise ArtifactError(f"{path}: WordPiece with normalizer {normalizer.get('type')!r} is not "
                            "supported; expected BertNormalizer")
    pre = (doc.get("pre_tokenizer") or {}).get("type")
    if pre != "BertPreTokenizer":
        raise ArtifactError(f"{path}: WordPiece with pre_tokenizer {pre!r} is not supported; "
                            "expected BertPreTokenizer")
    if model.get("continuing_subword_prefix", PREFIX) != PREFIX:
        raise ArtifactError(f"{path}: only the '##' continuing-subword prefix is supported")
    vocab = dict(model["vocab"])
    for entry in doc.get("added_tokens") or []:
        vocab.setdefault(entry["content"], entry["id"])
    specials = special_tokens_from_json(doc)
    specials.setdefault("unk", model.get("unk_token", "[UNK]"))
    return cls(vocab, special_tokens=specials, lowercase=normalizer.get("lowercase", True),
               strip_accents=normalizer.get("strip_accents"),
               handle_chinese_chars=normalizer.get("handle_chinese_chars", True),
               max_input_chars_per_word=model.get("max_input_chars_per_word", 100),
               template=Template.from_json(doc.get("post_processor")),
               special_strip=special_strip_from_json(doc))
