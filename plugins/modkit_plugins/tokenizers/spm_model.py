"""The ``sentencepiece`` tokenizer: SentencePiece's Unigram and BPE models, read from a
``.model`` file (without the ``sentencepiece`` package) and encoded as sentencepiece does."""
from __future__ import annotations

import random
import re
from array import array
from pathlib import Path
from typing import Any, Sequence

from modkit import ArtifactError, UserError
from modkit.fileio import atomic_path
from modkit.tokenization import Template

from .base import AddedToken, SubwordTokenizer
from .spm_native import NOT_BUILT, native
from .spm_normalize import SPACE, Normalizer
from .spm_proto import (BPE, BYTE, CONTROL, MODEL_TYPES, NORMAL, UNIGRAM, UNKNOWN, UNUSED, USER_DEFINED,
                        ModelProto, serialize_model)
from .spm_segment import UNK_PENALTY, ScoredBPE, build_trie, word_splitter
from .spm_unigram import Unigram

_SENTINEL = re.compile(r"<extra_id_\d+>")


def byte_piece(byte: int) -> str:
    return f"<0x{byte:02X}>"


def t5_template(eos: str) -> Template:
    """T5's: ``</s>`` after each text."""
    return Template((("$A", 0), (eos, 0)), (("$A", 0), (eos, 0), ("$B", 0), (eos, 0)))


def sentinel_tokens(extra_ids: int) -> list[str]:
    """T5's sentinels in id order: ``<extra_id_{n-1}>`` first, ``<extra_id_0>`` last."""
    return [f"<extra_id_{k}>" for k in reversed(range(extra_ids))]


class SentencePieceTokenizer(SubwordTokenizer):
    """A SentencePiece model: its pieces (with scores and types), its normalizer spec and the
    trainer options that matter when encoding (model type, byte fallback, unk surface).

    ``extra_ids`` appends T5's sentinels ``<extra_id_k>`` past the pieces, as Hugging Face's
    T5 tokenizers do. ``template`` places special tokens (T5's ``</s>``) in ``encode_plus``.
    """

    def __init__(self, model: ModelProto, *, extra_ids: int = 0, template: Template | None = None,
                 special_tokens: dict[str, str] | None = None, added: dict[str, AddedToken] | None = None,
                 float32_scoring: bool = True, where: str = "the model"):
        self.model = model
        #: Unigram path scores in float32 as sentencepiece adds them (a .model's), or in
        #: doubles as Hugging Face does (a model modkit trained, so its tokenizer.json gives
        #: the same ids in transformers: the two break exact ties differently)
        self.float32_scoring = float32_scoring
        trainer = model.trainer
        if trainer.model_type not in (UNIGRAM, BPE):
            name = MODEL_TYPES.get(trainer.model_type, trainer.model_type)
            raise ArtifactError(f"{where}: a SentencePiece {name!r} model; modkit reads unigram and bpe models")
        if trainer.treat_whitespace_as_suffix:
            raise ArtifactError(f"{where}: treat_whitespace_as_suffix is not supported")
        pieces = model.pieces
        vocab = {}
        for i, (piece, _, _) in enumerate(pieces):
            vocab.setdefault(piece, i)
        for token in sentinel_tokens(extra_ids):
            vocab.setdefault(token, len(vocab))
        self.extra_ids = extra_ids
        roles = dict(special_tokens) if special_tokens is not None else self._roles()
        extra = {t: AddedToken() for t in sentinel_tokens(extra_ids)}
        controls = {p: AddedToken() for p, _, kind in pieces if kind == CONTROL}
        super().__init__(vocab, roles, {**controls, **extra, **(added or {})})
        self.template = template
        types = [kind for _, _, kind in pieces]
        self._types = types
        self._unk_id = next((i for i, kind in enumerate(types) if kind == UNKNOWN), None)
        if self._unk_id is None:
            raise ArtifactError(f"{where}: the model has no unknown piece")
        self._byte_ids = {}
        if trainer.byte_fallback:
            self._byte_ids = {b: vocab.get(byte_piece(b), self._unk_id) for b in range(256)}
        user_defined = frozenset(p for p, _, kind in pieces if kind == USER_DEFINED)
        self.normalizer = Normalizer(model.normalizer, user_defined, where=where)
        self.denormalizer = (Normalizer(model.denormalizer, where=where)
                             if model.denormalizer and model.denormalizer.precompiled_charsmap else None)
        self._segmenter = self._make_segmenter(user_defined)

    def _roles(self) -> dict[str, str]:
        """Roles from the trainer spec's ids (sentencepiece's unk, bos, eos and pad)."""
        roles = {}
        for role in ("unk", "bos", "eos", "pad"):
            i = getattr(self.model.trainer, f"{role}_id")
            if 0 <= i < len(self.model.pieces):
                roles[role] = self.model.pieces[i][0]
        return roles

    def _make_segmenter(self, user_defined: frozenset[str]):
        pieces = self.model.pieces
        in_trie = [(p, i) for i, (p, _, kind) in enumerate(pieces) if kind in (NORMAL, USER_DEFINED, UNUSED)]
        space = SPACE if self.model.normalizer.escape_whitespaces else " "
        if self.model.trainer.model_type == BPE:
            return ScoredBPE(dict(reversed(in_trie)), [s for _, s, _ in pieces], self._unk_id, user_defined,
                             frozenset(i for i, (_, _, kind) in enumerate(pieces) if kind == UNUSED),
                             word_splitter((p for p, _ in in_trie), space))
        normal = [s for _, s, kind in pieces if kind == NORMAL]
        min_score = min(normal, default=0.0)
        scores = []
        for piece, score, kind in pieces:
            if kind == USER_DEFINED:  # sentencepiece 0.2.3's: 0.1 x (UTF-8 bytes - 1), the longest preferred
                score = _f32(0.1 * (len(piece.encode("utf-8")) - 1))
            scores.append(score)
        in_trie = [(p, i) for p, i in in_trie if pieces[i][2] != UNUSED]
        return Unigram(build_trie(in_trie), scores, self._unk_id, min_score - UNK_PENALTY,
                       float32_paths=self.float32_scoring, split=word_splitter((p for p, _ in in_trie), space),
                       byte_ids=[self._byte_ids[b] for b in range(256)] if self._byte_ids else None)

    @property
    def word_cache(self) -> bool:
        """Whether encoding keeps each word's segmentation for the next time the word comes
        (where the pieces allow: none crosses the start of a word). On by default; the ids
        are the same either way."""
        return self._segmenter.use_cache

    @word_cache.setter
    def word_cache(self, on: bool) -> None:
        self._segmenter.use_cache = bool(on)

    def _compilable(self) -> tuple[Unigram | None, Normalizer | None]:
        """The parts that have a compiled pass: a Unigram segmenter, the normaliser."""
        return (self._segmenter if isinstance(self._segmenter, Unigram) else None), self.normalizer

    @property
    def compiled(self) -> bool:
        """Whether compiled code segments (a Unigram model) or normalises this model's text
        (where it is built: see hatch_build.py); set False, the Python passes run, with the
        same ids."""
        segmenter, normalizer = self._compilable()
        return bool(segmenter and segmenter.use_native) or bool(normalizer and normalizer.use_compiled)

    @compiled.setter
    def compiled(self, on: bool) -> None:
        segmenter, normalizer = self._compilable()
        if segmenter is None and normalizer is None:
            raise UserError("only a Unigram model has a compiled segmenter; this one is BPE")
        if on and native is None:
            raise UserError(NOT_BUILT)
        if segmenter is not None:
            segmenter.use_native = on
        if normalizer is not None:
            normalizer.use_compiled = bool(on) and normalizer._compiled is not None

    # -- encoding -----------------------------------------------------------------------
    def _spans(self, normalized: str, segmentation=None) -> list[tuple[int, int, int]]:
        """(start, end, id) of each token of normalized text: a run of unknown characters is
        one unk token, or with byte fallback one token per UTF-8 byte (each spanning its
        character), as sentencepiece writes them."""
        spans: list[tuple[int, int, int]] = []
        unk, byte_ids = self._unk_id, self._byte_ids
        for span in segmentation if segmentation is not None else self._segmenter.segment(normalized):
            if span[2] != unk:
                spans.append(span)
            elif byte_ids:
                spans.extend((k, k + 1, byte_ids[b]) for k in range(span[0], span[1])
                             for b in normalized[k].encode("utf-8"))
            elif spans and spans[-1][2] == unk:
                spans[-1] = (spans[-1][0], span[1], unk)
            else:
                spans.append(span)
        return spans

    def _section(self, text: str, first: bool, aligned: bool) -> list[tuple[int, int, int]]:
        """(id, start, end) of the tokens of a stretch of text without added tokens; the
        offsets only when ``aligned``."""
        if not aligned:
            return [(i, 0, 0) for i in self._ids(text, first)]
        normalized, origin = self.normalizer.normalize_aligned(text)
        return [(i, origin[start], origin[end]) for start, end, i in self._spans(normalized)]

    def _ids(self, text: str, first: bool) -> list[int]:
        """The ids of a stretch of text without added tokens (``first``: at the start of the text)."""
        normalized = self.normalizer.normalize(text)
        ids = self._segmenter.ids(normalized)  # None where unknown characters need _spans
        return ids if ids is not None else [i for _, _, i in self._spans(normalized)]

    def encode_ordinary(self, text: str) -> list[int]:
        return self._ids(text, True)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        if not (self._passes_all if allow_special else self._passes_plain):  # no added token to look for
            return self._ids(text, True)
        ids: list[int] = []
        for segment, is_added, start, _ in self._segments_at(text, allow_special):
            if is_added:
                ids.append(self.vocab[segment])
            else:
                ids += self._ids(segment, start == 0)
        return ids

    def encode_with_offsets(self, text: str, *, allow_special: bool = False):
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for segment, is_added, start, end in self._segments_at(text, allow_special):
            if is_added:
                ids.append(self.vocab[segment])
                offsets.append((start, end))
                continue
            for i, a, b in self._section(segment, start == 0, True):
                ids.append(i)
                offsets.append((start + a, start + b))
        return ids, offsets

    def encode_sampled(self, text: str, *, alpha: float = 0.1, rng: random.Random) -> list[int]:
        """Ids of one segmentation drawn with probability proportional to exp(alpha x score)
        over all segmentations (subword regularisation, Kudo 2018; sentencepiece's
        ``enable_sampling`` with ``nbest_size=-1``). The same ``rng`` state gives the same ids."""
        if not isinstance(self._segmenter, Unigram):
            raise UserError("subword sampling needs a Unigram model; this one is BPE")
        normalized = self.normalizer.normalize(text)
        return [i for _, _, i in self._spans(normalized, self._segmenter.sample(normalized, alpha, rng))]

    def normalize(self, text: str) -> str:
        """The text as the model sees it (sentencepiece's ``normalize``)."""
        return self.normalizer.normalize(text)

    # -- decoding ------------------------------------------------------------------------
    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """As sentencepiece decodes: bytes pieces joined into characters (U+FFFD for each
        invalid byte), ``▁`` as a space, the first space dropped, unknown pieces as the unk
        surface (`` ⁇ ``). Control and other special tokens read as their text (to
        sentencepiece they are invisible); ``skip_special_tokens`` drops them and unknown
        pieces, as Hugging Face does."""
        spec = self.model.normalizer
        strip_first = spec.add_dummy_prefix or spec.remove_extra_whitespaces
        text: list[str] = []
        pending = bytearray()
        is_bos_ws, bos_ws_seen, written = True, False, False
        n_pieces = len(self._types)
        for i in ids:
            i = int(i)
            piece = self._token_of(i)
            kind = self._types[i] if i < n_pieces else CONTROL
            if kind == BYTE:
                pending.append(int(piece[3:5], 16))
                continue
            if pending:
                text.append(_bytes_text(pending))
                pending.clear()
                written = written or bool(text[-1])
            if bos_ws_seen or written:
                is_bos_ws = False
            bos_ws_seen = False
            if kind == UNKNOWN:
                if not skip_special_tokens:
                    text.append(self.model.trainer.unk_surface)
            elif i in self._special_ids or kind == CONTROL:
                if not skip_special_tokens:
                    text.append(piece)
            else:
                if is_bos_ws and strip_first and piece.startswith(SPACE):
                    piece = piece[1:]
                    bos_ws_seen = not spec.remove_extra_whitespaces
                text.append(piece.replace(SPACE, " "))
            written = written or bool(text and text[-1])
        if pending:
            text.append(_bytes_text(pending))
        out = "".join(text)
        return self.denormalizer.normalize(out) if self.denormalizer else out

    # -- files ---------------------------------------------------------------------------
    def save_model(self, path: str | Path) -> None:
        """Write a sentencepiece ``.model`` file (sentinels and added tokens are not in it)."""
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(serialize_model(self.model))

    def to_json(self) -> dict[str, Any]:
        from .spm_formats import to_hf_json

        return to_hf_json(self)

    @classmethod
    def from_file(cls, path: Path):
        from .spm_formats import load_sentencepiece

        return load_sentencepiece(cls, Path(path))

    @classmethod
    def train(cls, files, options=None, progress=None):
        """A Unigram or BPE model learned from text files (see :mod:`.spm_train`)."""
        from .sentencepiece import SentencePieceOptions
        from .spm_train import train_model

        options = options or SentencePieceOptions()
        model = train_model(files, options, progress)
        eos = model.pieces[options.special_ids["eos"]][0] if options.special_ids.get("eos", -1) >= 0 else None
        return cls(model, extra_ids=options.extra_ids, float32_scoring=False,
                   template=t5_template(eos) if options.append_eos and eos else None)


class HubSentencePieceTokenizer(SentencePieceTokenizer):
    """A Hugging Face tokenizer.json with a Unigram model (or a BPE with byte fallback),
    encoded and decoded as Hugging Face's ``tokenizers`` does (see :mod:`.spm_hf`)."""

    def __init__(self, doc: dict[str, Any], *, where: str = "tokenizer.json"):
        from . import spm_hf
        from .base import added_from_json, special_tokens_from_json

        model = doc["model"]
        if not model.get("vocab"):
            raise ArtifactError(f"{where}: a {model.get('type')} model with an empty vocabulary")
        if model.get("type") == "Unigram":
            vocab = {}
            for i, (piece, _) in enumerate(model["vocab"]):
                vocab.setdefault(piece, i)
        else:
            vocab = dict(model["vocab"])
        for entry in doc.get("added_tokens") or []:
            vocab.setdefault(entry["content"], entry["id"])
        self.doc = doc
        SubwordTokenizer.__init__(self, vocab, special_tokens_from_json(doc),
                                  added_from_json(doc, where, normalizes=bool(doc.get("normalizer"))))
        self.template = Template.from_json(doc.get("post_processor"))
        self.extra_ids = sum(1 for t in vocab if _SENTINEL.fullmatch(t))
        self._normalize = spm_hf.normalizer(doc.get("normalizer"), where)
        self._pre_tokenize = spm_hf.pre_tokenizer(doc.get("pre_tokenizer"), where)
        self._model = spm_hf.HFModel(model, self.vocab, where)
        self._decoder = spm_hf.decoder(doc.get("decoder"), where)
        self._aligned = spm_hf.Aligned

    def _section(self, text: str, first: bool, aligned: bool) -> list[tuple[int, int, int]]:
        normalized = self._normalize(self._aligned.of(text))
        out = []
        for word in self._pre_tokenize([normalized], first):
            for start, end, piece_id in self._model.spans(word.text):
                out.append((piece_id, word.origin[start], word.origin[end]))
        return out

    word_cache = False  # Hugging Face's pre-tokenizer hands the model one word at a time, uncached

    def _compilable(self) -> tuple[Unigram | None, Normalizer | None]:
        # the normaliser here is Hugging Face's, in Python: only a Unigram model's pass is compiled
        segmenter = self._model.segmenter
        return (segmenter if isinstance(segmenter, Unigram) else None), None

    def _ids(self, text: str, first: bool) -> list[int]:
        return [i for i, _, _ in self._section(text, first, False)]

    def normalize(self, text: str) -> str:
        return self._normalize(self._aligned.of(text)).text

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        tokens = [self._token_of(i) for i in ids if not (skip_special_tokens and int(i) in self._special_ids)]
        return "".join(self._decoder(tokens))

    def to_json(self) -> dict[str, Any]:
        return {**self.doc, "added_tokens": self._added_tokens_json()}

    def save_model(self, path) -> None:
        raise UserError("a tokenizer read from a Hugging Face tokenizer.json is saved as tokenizer.json only")


def _f32(value: float) -> float:
    """``value`` rounded to a C float."""
    return array("f", [value])[0]


def _bytes_text(data: bytes) -> str:
    """Bytes as sentencepiece writes byte pieces: each valid UTF-8 character as itself,
    each byte of an invalid sequence as U+FFFD."""
    out = []
    i, n = 0, len(data)
    while i < n:
        lead = data[i]
        width = 1 if lead < 0x80 else 2 if 0xC2 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF5 else 0
        if width and i + width <= n:
            try:
                out.append(data[i:i + width].decode("utf-8"))
                i += width
                continue
            except UnicodeDecodeError:
                pass
        out.append("\ufffd")
        i += 1
    return "".join(out)
