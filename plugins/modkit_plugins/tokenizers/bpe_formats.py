"""Files the ``bpe`` tokenizer reads and writes.

Reads: Hugging Face tokenizer.json (BPE model), a folder (or its vocab.json) with
vocab.json + merges.txt, a tiktoken ``*.tiktoken`` ranks file, and CLIP's gzipped merges
(``bpe_simple_vocab_16e6.txt.gz``). Writes: Hugging Face tokenizer.json.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import json
from pathlib import Path
from typing import Any

from modkit import ArtifactError

from . import pretokenize
from modkit.tokenization import Template

from .base import added_from_json, read_tokenizer_json, sentencepiece_style, special_tokens_from_json

GPT2_SPECIALS = {"eos": "<|endoftext|>", "bos": "<|endoftext|>"}
CLIP_SPECIALS = {"bos": "<start_of_text>", "eos": "<end_of_text>"}  # open_clip >= 2.24
_CLIP_HF_SPECIALS = {"bos": "<|startoftext|>", "eos": "<|endoftext|>"}  # Hugging Face's CLIP


def load_bpe(cls, path: Path):
    """A BPETokenizer from ``path``, or None when ``path`` is in no format read here."""
    if path.is_dir():
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return _from_vocab_merges(cls, path / "vocab.json", path / "merges.txt")
        return None
    if path.name.endswith(".tiktoken"):
        return _from_tiktoken(cls, path)
    if path.name.endswith(".txt.gz"):
        return _from_clip_merges(cls, path)
    if path.name == "vocab.json" and path.with_name("merges.txt").is_file():
        return _from_vocab_merges(cls, path, path.with_name("merges.txt"))
    doc = read_tokenizer_json(path)
    if doc is None or doc["model"].get("type", "BPE") != "BPE" or "merges" not in doc["model"]:
        return None
    if sentencepiece_style(doc):  # the sentencepiece tokenizer reads it
        return None
    return bpe_from_json(cls, doc, path)


def _parse_merges(lines, path: Path) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(lines, 1):
        if isinstance(line, list) and len(line) == 2:
            merges.append((line[0], line[1]))
            continue
        if isinstance(line, str):
            parts = line.split(" ")
            if len(parts) == 2:
                merges.append((parts[0], parts[1]))
                continue
        raise ArtifactError(f"{path}: merge {number} is {line!r}; expected two tokens")
    return merges


def _from_vocab_merges(cls, vocab_path: Path, merges_path: Path):
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{vocab_path}: not a JSON token -> id map ({e})") from None
    if not isinstance(vocab, dict):
        raise ArtifactError(f"{vocab_path}: expected a JSON object mapping tokens to ids")
    lines = [line for line in lines if line and not line.startswith("#version")]
    merges = _parse_merges(lines, merges_path)
    if any(right.endswith("</w>") for _, right in merges):
        # word-end merges: CLIP's when the vocabulary holds GPT-2's byte alphabet
        chars = pretokenize.byte_to_unicode().values()
        clip = all(c in vocab for c in chars)
        specials = {r: t for r, t in {**CLIP_SPECIALS, **_CLIP_HF_SPECIALS}.items() if t in vocab}
        return cls(vocab, merges, style="word-end", pre_tokenizer="clip" if clip else "whitespace",
                   special_tokens=specials)
    specials = {r: t for r, t in GPT2_SPECIALS.items() if t in vocab}
    return cls(vocab, merges, style="byte-level", special_tokens=specials)


def _from_tiktoken(cls, path: Path):
    """tiktoken's format: one ``base64(token bytes) rank`` per line."""
    vocab: dict[str, int] = {}
    try:
        for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
            if not line:
                continue
            token, rank = line.split()
            vocab[pretokenize.bytes_to_symbols(base64.b64decode(token, validate=True))] = int(rank)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ArtifactError(
            f"{path}: line {number} is not 'base64-token rank'; expected a tiktoken ranks file"
        ) from None
    ranks: dict[tuple[str, str], int] = {}
    for token, rank in vocab.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranks[(left, right)] = rank
    merges = [pair for pair, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    specials = {}
    if len(vocab) == 50256:  # GPT-2's ranks file leaves out its one special token
        specials = GPT2_SPECIALS
    return cls(vocab, merges, style="byte-level", special_tokens=specials, ranks=ranks,
               whole_word_tokens=True)


def _from_clip_merges(cls, path: Path):
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not a gzipped merges file ({e})") from None
    if not lines or not lines[0].startswith('"bpe_simple_vocab'):
        return None
    # open_clip keeps the first 49152 - 256 - 2 merges after the version line
    merges = _parse_merges(lines[1 : 49152 - 256 - 2 + 1], path)
    chars = list(pretokenize.byte_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab = {t: i for i, t in enumerate(tokens)}
    return cls(vocab, merges, style="word-end", pre_tokenizer="clip",
               special_tokens=dict(CLIP_SPECIALS))


# -- Hugging Face tokenizer.json -------------------------------------------------------------
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}


def bpe_to_json(tok) -> dict[str, Any]:
    word_end = tok.style == "word-end"
    model = {
        "type": "BPE", "dropout": None,
        "unk_token": tok.special_tokens.get("unk"),
        "continuing_subword_prefix": "" if word_end else None,
        "end_of_word_suffix": "</w>" if word_end else None,
        "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
        "vocab": tok.vocab, "merges": [list(m) for m in tok.merges],
    }
    normalizer = {"type": "Lowercase"} if tok.lowercase else None
    if tok.pre_tokenizer == "clip":
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"},
        ]}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pretokenize.CLIP_PATTERN},
             "behavior": "Removed", "invert": True},
            dict(_BYTE_LEVEL, use_regex=False),
        ]}
        # bytes back to text first, then word ends to spaces, the last one dropped
        decoder = {"type": "Sequence", "decoders": [
            dict(_BYTE_LEVEL),
            {"type": "Replace", "pattern": {"String": "</w>"}, "content": " "},
            {"type": "Strip", "content": " ", "start": 0, "stop": 1},
        ]}
    elif word_end:
        pre_tokenizer = {"type": "Whitespace"}
        decoder = {"type": "BPEDecoder", "suffix": "</w>"}
    else:
        pre_tokenizer = dict(_BYTE_LEVEL)
        decoder = dict(_BYTE_LEVEL)
    processors = ([dict(_BYTE_LEVEL)] if tok.trim_offsets else []) + \
        ([tok.template.to_json(tok.token_to_id)] if tok.template else [])
    post_processor = processors[0] if len(processors) == 1 else \
        {"type": "Sequence", "processors": processors} if processors else None
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": tok._added_tokens_json(),
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor, "decoder": decoder, "model": model,
    }


def _post_processor(doc: Any) -> tuple[Template | None, bool]:
    """The template and whether offsets are trimmed, from a tokenizer.json post_processor:
    TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel or a Sequence of them."""
    if not isinstance(doc, dict):
        return None, False
    if doc.get("type") == "Sequence":
        parts = [_post_processor(p) for p in doc.get("processors") or []]
        return next((t for t, _ in parts if t is not None), None), any(trim for _, trim in parts)
    trim = doc.get("type") in ("ByteLevel", "RobertaProcessing") and doc.get("trim_offsets", True)
    return Template.from_json(doc), bool(trim)


def _describe_pre_tokenizer(pre: Any) -> str | None:
    """Our name for a tokenizer.json pre_tokenizer, or None if we cannot reproduce it."""
    if not isinstance(pre, dict):
        return None
    kind = pre.get("type")
    if kind == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return "gpt2"
    if kind == "Whitespace":
        return "whitespace"
    if kind == "Sequence":
        steps = pre.get("pretokenizers") or []
        if (len(steps) == 2 and steps[0].get("type") == "Split"
                and steps[0].get("pattern", {}).get("Regex") == pretokenize.CLIP_PATTERN
                and steps[1].get("type") == "ByteLevel"):
            return "clip"
    return None


def bpe_from_json(cls, doc: dict[str, Any], path: Path):
    model = doc["model"]
    pre = _describe_pre_tokenizer(doc.get("pre_tokenizer"))
    if pre is None:
        raise ArtifactError(
            f"{path}: BPE with pre_tokenizer {json.dumps(doc.get('pre_tokenizer'))} is not "
            "supported; expected ByteLevel (GPT-2), Whitespace (word-end) or CLIP's Split+ByteLevel"
        )
    normalizer = doc.get("normalizer")
    lowercase = isinstance(normalizer, dict) and normalizer.get("type") == "Lowercase"
    if normalizer is not None and not lowercase and pre != "clip":
        raise ArtifactError(f"{path}: normalizer {normalizer.get('type')!r} is not supported "
                            "for BPE; expected none or Lowercase")
    if not isinstance(model.get("vocab"), dict):
        raise ArtifactError(f"{path}: model.vocab must map tokens to ids")
    vocab = dict(model["vocab"])
    for entry in doc.get("added_tokens") or []:
        vocab.setdefault(entry["content"], entry["id"])
    specials = special_tokens_from_json(doc)
    if model.get("unk_token"):
        specials.setdefault("unk", model["unk_token"])
    style = "word-end" if model.get("end_of_word_suffix") == "</w>" else "byte-level"
    if style == "byte-level" and pre != "gpt2":
        raise ArtifactError(f"{path}: BPE without an end-of-word suffix must use ByteLevel")
    template, trim_offsets = _post_processor(doc.get("post_processor"))
    return cls(vocab, _parse_merges(model.get("merges") or [], path), style=style,
               pre_tokenizer=pre, lowercase=lowercase, special_tokens=specials, template=template,
               added=added_from_json(doc, path, normalizes=lowercase or pre == "clip"), trim_offsets=trim_offsets)
