"""Files the ``sentencepiece`` tokenizer reads and writes: sentencepiece's ``.model`` and
Hugging Face's tokenizer.json (a ``Unigram`` model, or ``BPE`` with ``byte_fallback``).

modkit writes a tokenizer.json as transformers' faithful SentencePiece converter does
(``SpmConverter.build_tokenizer_from_spm_proto``), so Hugging Face encodes like sentencepiece,
and keeps the whole SentencePiece model in the model's ``modkit_sentencepiece`` key (piece
types, normalizer and trainer options), so modkit reads its own file back as the ``.model``
it came from. A tokenizer.json without that key is run as Hugging Face runs it.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from modkit import ArtifactError

from .base import read_tokenizer_json, sentencepiece_style
from .spm_proto import (BPE, CONTROL, NORMAL, UNIGRAM, USER_DEFINED, ModelProto, NormalizerSpec, TrainerSpec,
                        read_model)

_KEY = "modkit_sentencepiece"
_MODEL_FILES = ("spiece.model", "tokenizer.model", "sentencepiece.bpe.model")


def load_sentencepiece(cls, path: Path):
    """A SentencePieceTokenizer from ``path``, or None when it is in no format read here."""
    if path.is_dir():
        for name in _MODEL_FILES:
            if (path / name).is_file():
                return load_sentencepiece(cls, path / name)
        return None
    if path.suffix == ".model" and path.is_file():
        return cls(read_model(path), where=str(path))
    doc = read_tokenizer_json(path)
    if doc is None:
        return None
    model = doc["model"]
    if _KEY in model:
        return _from_modkit_json(cls, doc, path)
    if model.get("type") == "Unigram" or (model.get("type") == "BPE" and sentencepiece_style(doc)):
        from .spm_model import HubSentencePieceTokenizer

        return HubSentencePieceTokenizer(doc, where=str(path))
    return None


# -- writing ------------------------------------------------------------------------------------

def to_hf_json(tok) -> dict[str, Any]:
    """A tokenizer.json that Hugging Face encodes like sentencepiece (transformers'
    ``build_tokenizer_from_spm_proto``), with the SentencePiece model kept for modkit."""
    proto: ModelProto = tok.model
    spec, trainer = proto.normalizer, proto.trainer
    user_defined = [p for p, _, kind in proto.pieces if kind == USER_DEFINED]
    sentinels = [t for t in tok.vocab if t not in {p for p, _, _ in proto.pieces}]
    normalizers: list[dict[str, Any]] = []
    if spec.precompiled_charsmap:
        normalizers.append({"type": "Precompiled",
                            "precompiled_charsmap": base64.b64encode(spec.precompiled_charsmap).decode()})
    if spec.remove_extra_whitespaces:  # spaces only: sentencepiece leaves other whitespace alone
        normalizers += [_replace({"Regex": r"\A +| +\z"}, ""), _replace({"Regex": " {2,}"}, " ")]
    if spec.escape_whitespaces:
        normalizers.append(_replace({"String": " "}, "\u2581"))
    if spec.add_dummy_prefix:  # Metaspace adds no prefix to text starting with ▁; sentencepiece does
        normalizers.append(_replace({"Regex": "\\A\u2581"}, "\u2581\u2581"))
    pre_tokenizers: list[dict[str, Any]] = []
    if spec.add_dummy_prefix:
        pre_tokenizers.append({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                               "split": False})
    if user_defined:  # emitted whole, never merged
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        pre_tokenizers.append({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
                               "invert": False})
    decoders: list[dict[str, Any]] = [_replace({"String": "\u2581"}, " ")]
    if trainer.byte_fallback:
        decoders.append({"type": "ByteFallback"})
    if spec.add_dummy_prefix:
        decoders += [{"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]
    elif trainer.byte_fallback:
        decoders.append({"type": "Fuse"})
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": tok._added_tokens_json(),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre_tokenizers} if pre_tokenizers else None,
        "post_processor": tok.template.to_json(tok.token_to_id) if tok.template else None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {**_hf_model(proto, sentinels),
                  _KEY: {**_spec_json(proto, len(sentinels)), "float32_scoring": tok.float32_scoring,
                         "encodes_as": ENCODES_AS}},
    }


#: whose ids modkit's encoder gives: written into the tokenizer.json, so a token file cached
#: under an older encoder (other ids on long lines and overlapping user-defined symbols) is
#: not read as this one's (modkit.tokenfile names token files by the tokenizer's JSON)
ENCODES_AS = "sentencepiece 0.2.3"


def _replace(pattern: dict[str, str], content: str) -> dict[str, Any]:
    return {"type": "Replace", "pattern": pattern, "content": content}


def _hf_model(proto: ModelProto, sentinels: list[str]) -> dict[str, Any]:
    trainer = proto.trainer
    if trainer.model_type == UNIGRAM:
        vocab = [[p, s] for p, s, _ in proto.pieces] + [[t, 0.0] for t in sentinels]
        return {"type": "Unigram", "unk_id": trainer.unk_id if trainer.unk_id >= 0 else None, "vocab": vocab,
                "byte_fallback": trainer.byte_fallback}
    vocab = {}
    for i, (p, _, _) in enumerate(proto.pieces):
        vocab.setdefault(p, i)
    for t in sentinels:
        vocab.setdefault(t, len(vocab))
    normal = {p: (s, i) for i, (p, s, kind) in enumerate(proto.pieces) if kind == NORMAL}
    ranked = sorted((-score, i, piece[:k], piece[k:]) for piece, (score, i) in normal.items()
                    for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
    unk = proto.pieces[trainer.unk_id][0] if 0 <= trainer.unk_id < len(proto.pieces) else None
    return {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": trainer.byte_fallback,
            "ignore_merges": any(kind == USER_DEFINED for _, _, kind in proto.pieces),
            "vocab": vocab, "merges": [[left, right] for _, _, left, right in ranked]}


def _spec_json(proto: ModelProto, extra_ids: int) -> dict[str, Any]:
    t, n = proto.trainer, proto.normalizer
    out = {
        "model_type": "unigram" if t.model_type == UNIGRAM else "bpe",
        "types": [kind for _, _, kind in proto.pieces],
        "extra_ids": extra_ids,
        "trainer": {k: getattr(t, k) for k in ("byte_fallback", "split_digits", "max_sentencepiece_length",
                                                "unk_surface", "unk_id", "bos_id", "eos_id", "pad_id", "vocab_size")},
        "normalizer": {k: getattr(n, k) for k in ("name", "add_dummy_prefix", "remove_extra_whitespaces",
                                                   "escape_whitespaces")},
    }
    if t.model_type == BPE:  # a Hugging Face BPE vocabulary has no scores
        out["scores"] = [s for _, s, _ in proto.pieces]
    if proto.denormalizer is not None and proto.denormalizer.precompiled_charsmap:
        d = proto.denormalizer
        out["denormalizer"] = {"precompiled_charsmap": base64.b64encode(d.precompiled_charsmap).decode(),
                               **{k: getattr(d, k) for k in ("name", "add_dummy_prefix", "remove_extra_whitespaces",
                                                             "escape_whitespaces")}}
    return out


# -- reading modkit's own tokenizer.json -----------------------------------------------------------

def _from_modkit_json(cls, doc: dict[str, Any], path: Path):
    from modkit.tokenization import Template

    from .base import added_from_json, special_tokens_from_json

    model = doc["model"]
    spec = model[_KEY]
    try:
        types = spec["types"]
        if model["type"] == "Unigram":
            pieces = [(p, float(s), kind) for (p, s), kind in zip(model["vocab"], types)]
        else:
            by_id = {i: p for p, i in model["vocab"].items()}
            pieces = [(by_id[i], float(s), kind) for i, (s, kind) in enumerate(zip(spec["scores"], types))]
        charsmap = b""
        for entry in (doc.get("normalizer") or {}).get("normalizers", []):
            if entry.get("type") == "Precompiled":
                charsmap = base64.b64decode(entry["precompiled_charsmap"])
        proto = ModelProto(pieces, TrainerSpec(model_type=UNIGRAM if spec["model_type"] == "unigram" else BPE,
                                               **spec["trainer"]),
                           NormalizerSpec(precompiled_charsmap=charsmap, **spec["normalizer"]))
        if "denormalizer" in spec:
            d = dict(spec["denormalizer"])
            proto.denormalizer = NormalizerSpec(precompiled_charsmap=base64.b64decode(d.pop("precompiled_charsmap")), **d)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: a corrupt {_KEY} entry ({type(e).__name__}: {e})") from None
    own = {p for p, _, kind in pieces if kind in (CONTROL, USER_DEFINED)}
    added = {t: a for t, a in added_from_json(doc, path, normalizes=False).items()
             if t not in own and not t.startswith("<extra_id_")}
    return cls(proto, extra_ids=spec.get("extra_ids", 0), template=Template.from_json(doc.get("post_processor")),
               float32_scoring=spec.get("float32_scoring", True),
               special_tokens=special_tokens_from_json(doc), added=added, where=str(path))
