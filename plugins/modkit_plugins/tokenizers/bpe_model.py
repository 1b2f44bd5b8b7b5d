"""The ``bpe`` tokenizer: word-end (``</w>``, original GPT and CLIP) and byte-level (GPT-2)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import regex

from modkit import UserError
from modkit.tokenization import Template

from . import pretokenize
from .base import AddedToken, SubwordTokenizer
from .bpe import BPEOptions, default_special_tokens
from .bpe_train import count_words, learn_merges

WORD_END = "</w>"
_NO_RANK = 1 << 62  # ranks a pair that never merges


class BPETokenizer(SubwordTokenizer):
    """Byte-pair encoding with merges applied by rank.

    ``ranks`` maps an adjacent pair of tokens to its priority (lower merges first). It is
    built from a merges list, or from a tiktoken ranks file (every split of a token into two
    tokens gets that token's rank, which is how tiktoken itself merges).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        style: str = "word-end",
        pre_tokenizer: str | None = None,
        lowercase: bool = False,
        special_tokens: dict[str, str] | None = None,
        ranks: dict[tuple[str, str], int] | None = None,
        whole_word_tokens: bool = False,
        template: Template | None = None,
        added: dict[str, AddedToken] | None = None,
        trim_offsets: bool = False,
    ):
        super().__init__(vocab, special_tokens or {}, added)
        #: where encode_plus puts special tokens (a tokenizer.json's post-processor), if anywhere
        self.template = template
        #: offsets leave out a token's leading and trailing spaces (Hugging Face's ByteLevel and
        #: RobertaProcessing post-processors with trim_offsets)
        self.trim_offsets = trim_offsets
        self.style = style
        self.pre_tokenizer = pre_tokenizer or ("gpt2" if style == "byte-level" else "whitespace")
        self.lowercase = lowercase
        self.merges = [tuple(m) for m in merges]
        self.ranks = ranks if ranks is not None else {m: r for r, m in enumerate(self.merges)}
        # tiktoken's rule: a word that is itself a token is that token, without merging
        self.whole_word_tokens = whole_word_tokens
        self.byte_alphabet = style == "byte-level" or self.pre_tokenizer == "clip"
        self._pattern = pretokenize.compiled(self.pre_tokenizer)
        self._unk_id = self.special_id("unk")

    # -- training -----------------------------------------------------------------------
    @classmethod
    def train(cls, files, options: BPEOptions | None = None, progress=None) -> BPETokenizer:
        options = options or BPEOptions()
        specials = options.special_tokens or default_special_tokens(options.style)
        shell = cls({}, [], style=options.style, pre_tokenizer=options.pre_tokenizer,
                    lowercase=options.lowercase)
        word_counts = count_words(files, shell._words)
        words: dict[tuple[str, ...], int] = {}
        for word, count in word_counts.items():
            symbols = shell._symbols(word)
            words[symbols] = words.get(symbols, 0) + count
        n_special = len(set(specials.values()))
        tokens, merges = learn_merges(
            words, shell._base_alphabet(), options.vocab_size - n_special,
            options.min_frequency, progress,
        )
        vocab = {t: i for i, t in enumerate(sorted(set(specials.values())))}
        for token in tokens:
            vocab.setdefault(token, len(vocab))
        return cls(vocab, merges, style=options.style, pre_tokenizer=options.pre_tokenizer,
                   lowercase=options.lowercase, special_tokens=specials)

    def _base_alphabet(self) -> list[str]:
        """Symbols every vocabulary of this style holds, seen in training or not."""
        if not self.byte_alphabet:
            return []
        chars = list(pretokenize.byte_to_unicode().values())
        return chars + [c + WORD_END for c in chars] if self.style == "word-end" else chars

    # -- encoding -----------------------------------------------------------------------
    def _normalize(self, text: str) -> str:
        if self.pre_tokenizer == "clip":
            return pretokenize.clip_clean(text)
        return pretokenize.lowercase(text) if self.lowercase else text

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        if not (allow_special and self.pre_tokenizer == "clip" and self.special_tokens):
            return super().encode(text, allow_special=allow_special)
        # open_clip finds its special tokens as alternatives of its regex, after cleaning:
        # so "]<end_of_text>" is one punctuation run there, not "]" and a special token
        specials = {t.lower(): self.vocab[t] for t in self.special_tokens.values()}
        ids: list[int] = []
        for word in _clip_with_specials(tuple(sorted(specials, key=len, reverse=True))).findall(
                self._normalize(text)):
            ids += [specials[word.lower()]] if word.lower() in specials else self._ids_of_words([word])
        return ids

    def _words(self, text: str) -> list[str]:
        if self.pre_tokenizer == "gpt2" and not self.lowercase:
            return pretokenize.gpt2_words(text)
        return self._pattern.findall(self._normalize(text))

    def _symbols(self, word: str) -> tuple[str, ...]:
        """A pre-tokenized word as the symbols merging starts from."""
        chars = pretokenize.bytes_to_symbols(_utf8(word)) if self.byte_alphabet else word
        if self.style == "word-end":
            return (*chars[:-1], chars[-1] + WORD_END)
        return tuple(chars)

    def _word_tokens(self, word: str) -> list[str]:
        symbols = self._symbols(word)
        if self.whole_word_tokens:
            whole = "".join(symbols)
            if whole in self.vocab:
                return [whole]
        return merge_symbols(list(symbols), self.ranks)

    def _word_ids(self, word: str) -> list[int]:
        vocab = self.vocab
        return [vocab[token] if token in vocab else self._unknown(token, word) for token in self._word_tokens(word)]

    def _unknown(self, token: str, word: str) -> int:
        """The unk id for a character never seen in training (word-end over characters only);
        without an unk token, an error: dropping the character would lose text silently."""
        if self._unk_id is None:
            raise UserError(
                f"bpe: {token.removesuffix(WORD_END)!r} (in {word!r}) is not in the vocabulary and this "
                "word-end tokenizer has no 'unk' special token, so the text cannot be encoded without "
                "losing it; train with an unk token (special_tokens) or with style = \"byte-level\"")
        return self._unk_id

    def _segment_spans(self, segment: str):
        if self.pre_tokenizer == "clip":
            raise UserError("offsets are not available with the clip pre-tokenizer: its text "
                            "cleaning (ftfy, HTML unescaping) does not keep character positions")
        if self.lowercase:
            segment, origin = pretokenize.lowercase_aligned(segment)
        else:
            origin = range(len(segment))
        for match in self._pattern.finditer(segment):
            at, word = match.start(), match.group()
            for token_id, start, end in self._token_spans(word):
                if self.trim_offsets and self.style == "byte-level":
                    start, end = _trimmed(word, start, end)
                stop = origin[at + end - 1] + 1
                yield token_id, origin[at + start] if end > start else stop, stop

    def _added_span(self, text: str, start: int, end: int) -> tuple[int, int]:
        if not (self.trim_offsets and self.style == "byte-level"):
            return start, end
        return _trimmed(text, start, end, space=r"\s")  # trimmed like a token, of any whitespace here

    def _token_spans(self, word: str):
        """(id, start, end) of each token of ``word``, in characters of ``word``."""
        if self.byte_alphabet:  # tokens count bytes: find the character each byte is in
            char_at = [k for k, c in enumerate(word) for _ in range(len(_utf8(c)))]
        else:
            char_at = range(len(word))
        position = 0
        for token in self._word_tokens(word):
            units = len(token) - (len(WORD_END) if token.endswith(WORD_END) else 0)
            token_id = self.vocab[token] if token in self.vocab else self._unknown(token, word)
            yield token_id, char_at[position], char_at[position + units - 1] + 1
            position += units

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        if self.style == "byte-level":
            return self._decode_bytes(ids, skip_special_tokens)
        text = super().decode(ids, skip_special_tokens=skip_special_tokens)
        if self.style != "word-end":
            return text
        # every word end is a space, a special token's neighbour's included, except the last
        # token's (Hugging Face's BPEDecoder; open_clip keeps that one too)
        kept = [i for i in ids if not (skip_special_tokens and int(i) in self._special_ids)]
        last_ends_word = bool(kept) and self._token_of(kept[-1]).endswith(WORD_END)
        return text[:-1] if last_ends_word and text.endswith(" ") else text

    def _decode_bytes(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        """Hugging Face's ByteLevel decoder: each token's bytes (an added token whose text is
        not all byte symbols gives its UTF-8), joined, then decoded once."""
        to_byte = pretokenize.unicode_to_byte()
        data = bytearray()
        for i in ids:
            token = self._token_of(i)
            if skip_special_tokens and int(i) in self._special_ids:
                continue
            if all(c in to_byte for c in token):
                data += bytes(to_byte[c] for c in token)
            else:
                data += token.encode("utf-8", errors="surrogatepass")
        return data.decode("utf-8", errors="replace")

    def _decode_tokens(self, tokens: list[str]) -> str:
        text = "".join(tokens)
        if self.byte_alphabet:
            to_byte = pretokenize.unicode_to_byte()
            if self.style == "word-end":
                return " ".join(_bytes_text(part, to_byte) for part in text.split(WORD_END))
            return _bytes_text(text, to_byte)
        return text.replace(WORD_END, " ")

    # -- files ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        from .bpe_formats import bpe_to_json

        return bpe_to_json(self)

    @classmethod
    def from_file(cls, path: Path) -> BPETokenizer | None:
        from .bpe_formats import load_bpe

        return load_bpe(cls, Path(path))


@functools.lru_cache(maxsize=4)
def _clip_with_specials(specials: tuple[str, ...]) -> regex.Pattern:
    alternatives = "|".join(regex.escape(t) for t in specials)
    return regex.compile(f"{alternatives}|{pretokenize.CLIP_PATTERN}", regex.IGNORECASE)


def _trimmed(text: str, start: int, end: int, space: str = " ") -> tuple[int, int]:
    """The span ``text[start:end]`` without its leading and trailing ``space`` (a regex
    character class; by default U+0020 only: the one byte Hugging Face's ByteLevel trimming
    looks for in a token); a span of spaces only keeps an empty span at its end."""
    piece = text[start:end]
    lead = len(regex.match(f"[{space}]*", piece).group())
    trail = len(regex.search(f"[{space}]*$", piece).group())
    new_start = min(start + lead, end)
    return new_start, max(end - trail, new_start) if trail else end


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates become U+FFFD, as tiktoken does
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _bytes_text(symbols: str, to_byte: dict[str, int]) -> str:
    return bytes(to_byte[c] for c in symbols if c in to_byte).decode("utf-8", errors="replace")


def merge_symbols(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges to one word: merge the lowest-ranked adjacent pair (the leftmost one on a
    tie), then look again, until no adjacent pair has a rank. This is the order of Hugging
    Face's and tiktoken's BPE; only the two pairs next to a merge are re-ranked."""
    get = ranks.get
    pair_ranks = [get(pair, _NO_RANK) for pair in zip(symbols, symbols[1:])]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_RANK:
            break
        i = pair_ranks.index(best)
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = get((symbols[i - 1], symbols[i]), _NO_RANK)
        if i < len(pair_ranks):
            pair_ranks[i] = get((symbols[i], symbols[i + 1]), _NO_RANK)
    return symbols
