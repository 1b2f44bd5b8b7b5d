"""SentencePiece's ``.model`` file (the protobuf ``ModelProto``), read and written by hand.

Only the fields a tokenizer needs are kept; the wire format is small enough that a reader
here beats depending on the ``protobuf`` package at run time. Field numbers are those of
sentencepiece's ``sentencepiece_model.proto``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from modkit import ArtifactError

# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# TrainerSpec.ModelType
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4
MODEL_TYPES = {UNIGRAM: "unigram", BPE: "bpe", WORD: "word", CHAR: "char"}

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_FLOAT = struct.Struct("<f")
# field number -> (attribute, kind) of the messages' scalar fields, read and written from here;
# kind: "int" (varint), "int32" (signed varint), "bool", "str", "bytes"
_TRAINER_FIELDS = {3: ("model_type", "int"), 4: ("vocab_size", "int"), 20: ("max_sentencepiece_length", "int"),
                   24: ("treat_whitespace_as_suffix", "bool"), 25: ("split_digits", "bool"),
                   35: ("byte_fallback", "bool"), 44: ("unk_surface", "str"), 40: ("unk_id", "int32"),
                   41: ("bos_id", "int32"), 42: ("eos_id", "int32"), 43: ("pad_id", "int32")}
_NORMALIZER_FIELDS = {1: ("name", "str"), 2: ("precompiled_charsmap", "bytes"), 3: ("add_dummy_prefix", "bool"),
                      4: ("remove_extra_whitespaces", "bool"), 5: ("escape_whitespaces", "bool")}


def _int32(value: int) -> int:
    """A varint read as a signed int32 (negative ones take ten bytes, two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class NormalizerSpec:
    name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


@dataclass
class TrainerSpec:
    """The trainer options a tokenizer needs at encode and decode time."""
    model_type: int = UNIGRAM
    vocab_size: int = 8000
    treat_whitespace_as_suffix: bool = False
    split_digits: bool = False
    byte_fallback: bool = False
    max_sentencepiece_length: int = 16
    unk_surface: str = " \u2047 "
    unk_id: int = 0  # -1: no such token
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1


@dataclass
class ModelProto:
    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    normalizer: NormalizerSpec = field(default_factory=NormalizerSpec)
    denormalizer: NormalizerSpec | None = None


class _Truncated(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Truncated("a varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message: ints for varints and fixed-width
    fields (fixed32 as its raw 4 bytes' integer), bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _BYTES:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Truncated(f"field {number} runs past the end")
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (_FIXED32, _FIXED64):
            width = 4 if wire == _FIXED32 else 8
            if pos + width > len(buf):
                raise _Truncated(f"field {number} runs past the end")
            value, pos = buf[pos:pos + width], pos + width
        else:
            raise ValueError(f"unknown wire type {wire} in field {number}")
        yield number, wire, value


def _piece(buf: bytes) -> tuple[str, float, int]:
    piece, score, kind = "", 0.0, NORMAL
    for number, _, value in _fields(buf):
        if number == 1:
            piece = value.decode("utf-8")
        elif number == 2:
            score = _FLOAT.unpack(value)[0]
        elif number == 3:
            kind = value
    return piece, score, kind


def _read_value(value, kind: str):
    if kind == "str":
        return value.decode("utf-8")
    if kind == "bytes":
        return bytes(value)
    return {"int": int, "int32": _int32, "bool": bool}[kind](value)


def _message(buf: bytes, spec, fields: dict[int, tuple[str, str]]):
    """``spec`` with the scalar ``fields`` that ``buf`` holds set; others are passed over."""
    for number, _, value in _fields(buf):
        if number in fields:
            name, kind = fields[number]
            setattr(spec, name, _read_value(value, kind))
    return spec


def parse_model(data: bytes, path: Path | str = "<bytes>") -> ModelProto:
    """The ``ModelProto`` in ``data``; an ArtifactError naming ``path`` when it is not one."""
    model = ModelProto()
    try:
        for number, wire, value in _fields(data):
            if wire != _BYTES:
                continue
            if number == 1:
                model.pieces.append(_piece(value))
            elif number == 2:
                model.trainer = _message(value, TrainerSpec(), _TRAINER_FIELDS)
            elif number == 3:
                model.normalizer = _message(value, NormalizerSpec(), _NORMALIZER_FIELDS)
            elif number == 5:
                model.denormalizer = _message(value, NormalizerSpec(), _NORMALIZER_FIELDS)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise ArtifactError(f"{path}: not a SentencePiece model ({e})") from None
    if not model.pieces:
        raise ArtifactError(f"{path}: not a SentencePiece model (no pieces)")
    return model


def read_model(path: Path) -> ModelProto:
    return parse_model(Path(path).read_bytes(), path)


# -- writing -----------------------------------------------------------------------------

def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _key(number, _BYTES) + _encode_varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _encode_varint(int(value) % (1 << 64))


def _message_bytes(spec, fields: dict[int, tuple[str, str]]) -> bytes:
    out = b""
    for number, (name, kind) in fields.items():
        value = getattr(spec, name)
        if kind in ("str", "bytes"):
            out += _bytes_field(number, value.encode() if kind == "str" else value)
        else:
            out += _int_field(number, value)
    return out


def serialize_model(model: ModelProto) -> bytes:
    """``model`` as a ``.model`` file's bytes, which sentencepiece loads."""
    out = bytearray()
    for piece, score, kind in model.pieces:
        out += _bytes_field(1, _bytes_field(1, piece.encode()) + _key(2, _FIXED32) + _FLOAT.pack(score)
                            + _int_field(3, kind))
    out += _bytes_field(2, _message_bytes(model.trainer, _TRAINER_FIELDS))
    out += _bytes_field(3, _message_bytes(model.normalizer, _NORMALIZER_FIELDS))
    if model.denormalizer is not None:
        out += _bytes_field(5, _message_bytes(model.denormalizer, _NORMALIZER_FIELDS))
    return bytes(out)
