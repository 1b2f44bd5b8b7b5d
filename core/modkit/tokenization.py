"""Finding the tokenizer component that reads a given file (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from modkit.errors import ArtifactError
from modkit.hub import is_hub_name
from modkit.hub import resolve as resolve_hub
from modkit.interfaces import Tokenizer
from modkit.manifest import FILE as MANIFEST, Manifest


def load_tokenizer(path, *, registry=None) -> Tokenizer:
    """Load a tokenizer from an artifact folder, a tokenizer.json (modkit or Hugging Face),
    a BERT vocab.txt, a ``*.tiktoken`` ranks file, or a folder with vocab.json + merges.txt;
    ``hf:ORG/NAME[@REVISION]`` reads a Hugging Face repository's folder through its cache.

    Every registered tokenizer is asked in turn whether it reads the file. An artifact's
    tokenizer is read by the component its manifest names, and only by it: another component
    that claims the file could tokenize differently, so a missing one is an error naming it.
    """
    from modkit.registry import get_registry

    registry = registry or get_registry()
    path = resolve_hub(path).path if is_hub_name(path) else Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder")
    if path.is_dir() and (path / MANIFEST).exists():  # an artifact: its tokenizer.json's sha256 checked
        manifest = Manifest.read(path, verify=False)
        manifest.verify(path, ["tokenizer.json"])
        return artifact_tokenizer(path, manifest, registry)
    if path.is_dir() and (path / "tokenizer.json").exists():
        path = path / "tokenizer.json"
    names = registry.names("tokenizer")
    for name in names:
        tokenizer = registry.get("tokenizer", name).load().from_file(path)
        if tokenizer is not None:
            return tokenizer
    raise ArtifactError(
        f"{path}: not a tokenizer modkit can read (tried {', '.join(names) or 'no tokenizers'}); "
        "expected a tokenizer.json, a BERT vocab.txt, a *.tiktoken file, or a folder with "
        "vocab.json and merges.txt"
    )


def artifact_tokenizer(folder: Path, manifest: Manifest, registry) -> Tokenizer:
    """The tokenizer of an artifact, read by the component its manifest names (and no other)."""
    record = manifest.components.tokenizer
    name, plugin, version = record.name, record.plugin, record.version
    if name not in registry.names("tokenizer"):
        raise ArtifactError(
            f"{folder}: the artifact's tokenizer {name!r} (plugin {plugin!r} {version}) is not installed here; "
            "install that plugin (`modkit list --kind tokenizer` shows the tokenizers installed)")
    tokenizer = registry.get("tokenizer", name).load().from_file(folder / "tokenizer.json")
    if tokenizer is None:
        raise ArtifactError(f"{folder / 'tokenizer.json'}: tokenizer {name!r} (plugin {plugin!r}), which the "
                            "manifest names, does not read it; the artifact is corrupt")
    return tokenizer


# -- templates, truncation and padding: shared by every tokenizer --------------------------------

@dataclass(frozen=True)
class Template:
    """Where special tokens go around one text or a pair, and each piece's segment id.

    ``single`` and ``pair`` are lists of ``(piece, type_id)``, where a piece is ``"$A"`` or
    ``"$B"`` (the texts) or a special token's text. BERT's is
    ``single=[("[CLS]", 0), ("$A", 0), ("[SEP]", 0)]`` and
    ``pair=[("[CLS]", 0), ("$A", 0), ("[SEP]", 0), ("$B", 1), ("[SEP]", 1)]``.
    """

    single: tuple[tuple[str, int], ...] = (("$A", 0),)
    pair: tuple[tuple[str, int], ...] = (("$A", 0), ("$B", 1))

    def added(self, is_pair: bool) -> int:
        """How many special tokens the template adds."""
        return sum(piece not in ("$A", "$B") for piece, _ in (self.pair if is_pair else self.single))

    def to_json(self, token_to_id) -> dict[str, Any]:
        """Hugging Face's TemplateProcessing post-processor."""
        def items(pieces):
            return [
                {"Sequence": {"id": piece[1], "type_id": t}} if piece in ("$A", "$B")
                else {"SpecialToken": {"id": piece, "type_id": t}}
                for piece, t in pieces
            ]
        specials = sorted({p for p, _ in self.single + self.pair if p not in ("$A", "$B")})
        return {
            "type": "TemplateProcessing", "single": items(self.single), "pair": items(self.pair),
            "special_tokens": {
                s: {"id": s, "ids": [token_to_id(s)], "tokens": [s]} for s in specials
            },
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> Template | None:
        """The template of a tokenizer.json post_processor (TemplateProcessing or
        BertProcessing), or None when it has none that we read."""
        if not isinstance(doc, dict):
            return None
        if doc.get("type") == "BertProcessing":
            cls_text, sep = doc["cls"][0], doc["sep"][0]
            return cls(((cls_text, 0), ("$A", 0), (sep, 0)),
                       ((cls_text, 0), ("$A", 0), (sep, 0), ("$B", 1), (sep, 1)))
        if doc.get("type") == "RobertaProcessing":  # RoBERTa's and BART's: <s> A </s></s> B </s>, one segment
            cls_text, sep = doc["cls"][0], doc["sep"][0]
            return cls(((cls_text, 0), ("$A", 0), (sep, 0)),
                       ((cls_text, 0), ("$A", 0), (sep, 0), (sep, 0), ("$B", 0), (sep, 0)))
        if doc.get("type") != "TemplateProcessing":
            return None

        def pieces(items):
            out = []
            for item in items:
                if "Sequence" in item:
                    out.append(("$" + item["Sequence"]["id"], item["Sequence"]["type_id"]))
                else:
                    out.append((item["SpecialToken"]["id"], item["SpecialToken"]["type_id"]))
            return tuple(out)

        return cls(pieces(doc["single"]), pieces(doc["pair"]))


@dataclass
class Encoding:
    """One encoded text (or pair): ids, segment ids, and character offsets when asked for.

    ``offsets[i]`` is ``(start, end)`` in the text token ``i`` came from; ``sequence_ids[i]``
    is 0 for the first text, 1 for the second and None for added special tokens (whose
    offsets are ``(0, 0)``).
    """

    ids: list[int]
    type_ids: list[int]
    sequence_ids: list[int | None]
    offsets: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def truncate_pair(a: list, b: list | None, budget: int) -> tuple[int, int]:
    """Lengths to keep of ``a`` and ``b`` so they fit ``budget`` tokens, as Hugging Face's
    ``longest_first``: a text shorter than half the budget is kept whole, and otherwise the
    shorter text (the first, on a tie) keeps half the budget, rounded down."""
    budget = max(budget, 0)
    if b is None:
        return min(len(a), budget), 0
    if len(a) + len(b) <= budget:
        return len(a), len(b)
    if len(a) > len(b):
        keep_b = min(len(b), budget // 2)
        return budget - keep_b, keep_b
    keep_a = min(len(a), budget // 2)
    return keep_a, budget - keep_a


def apply_template(template: Template, token_to_id, a: Encoding, b: Encoding | None) -> Encoding:
    """Place special tokens and segment ids around ``a`` (and ``b``) as the template says."""
    out = Encoding([], [], [], [] if a.offsets is not None else None)
    for piece, type_id in template.pair if b is not None else template.single:
        if piece in ("$A", "$B"):
            part = a if piece == "$A" else b
            out.ids += part.ids
            out.type_ids += [type_id] * len(part.ids)
            out.sequence_ids += [0 if piece == "$A" else 1] * len(part.ids)
            if out.offsets is not None:
                out.offsets += part.offsets
        else:
            special = token_to_id(piece)
            if special is None:
                raise ArtifactError(f"template token {piece!r} is not in the vocabulary")
            out.ids.append(special)
            out.type_ids.append(type_id)
            out.sequence_ids.append(None)
            if out.offsets is not None:
                out.offsets.append((0, 0))
    return out


def pad_batch(encodings: list[Encoding], pad_id: int, length: int | None = None,
              side: str = "right") -> dict[str, Any]:
    """Stack encodings into int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids``
    (and ``offsets`` when present), padded with ``pad_id`` to ``length`` (default: longest)."""
    import numpy as np

    from modkit.runtime.sessions import pad_ids  # imported here: the runtime imports this module

    ids, mask = pad_ids([e.ids for e in encodings], pad_id, length=length, side=side)
    batch = {"input_ids": ids, "attention_mask": mask,
             "token_type_ids": pad_ids([e.type_ids for e in encodings], 0, length=length, side=side)[0]}
    if encodings and all(e.offsets is not None for e in encodings):
        offsets = np.zeros(ids.shape + (2,), dtype=np.int64)
        # the real positions, row by row, are the encodings' offsets one after another
        offsets[mask == 1] = np.array([o for e in encodings for o in e.offsets], dtype=np.int64).reshape(-1, 2)
        batch["offsets"] = offsets
    return batch


def encode_plus(
    tokenizer: Tokenizer,
    text: str,
    pair: str | None = None,
    *,
    add_special_tokens: bool = True,
    max_length: int | None = None,
    return_offsets: bool = False,
    allow_special: bool = False,
) -> Encoding:
    """One text or a pair with the template's special tokens and segment ids, truncated
    to ``max_length`` tokens (the longer text loses tokens first)."""
    def part(t: str, sequence: int) -> Encoding:
        if return_offsets:
            ids, offsets = tokenizer.encode_with_offsets(t, allow_special=allow_special)
        else:
            ids, offsets = tokenizer.encode(t, allow_special=allow_special), None
        return Encoding(ids, [sequence] * len(ids), [sequence] * len(ids), offsets)

    a = part(text, 0)
    b = part(pair, 1) if pair is not None else None
    template = tokenizer.template if add_special_tokens and tokenizer.template else None
    if max_length is not None:
        budget = max_length - (template.added(b is not None) if template else 0)
        keep_a, keep_b = truncate_pair(a.ids, b.ids if b else None, budget)
        a = _cut(a, keep_a)
        b = _cut(b, keep_b) if b is not None else None
    if template is not None:
        return apply_template(template, tokenizer.token_to_id, a, b)
    if b is None:
        return a
    return Encoding(a.ids + b.ids, a.type_ids + b.type_ids, a.sequence_ids + b.sequence_ids,
                    a.offsets + b.offsets if a.offsets is not None else None)


def encode_words(tokenizer: Tokenizer, words: Sequence[str], *, add_special_tokens: bool = True,
                 max_length: int | None = None) -> tuple[Encoding, list[int | None]]:
    """Pre-split words (a tagging task's) as one text, and for every token the index of the
    word it comes from, None for added special tokens: what transformers gives for
    ``is_split_into_words=True`` through ``word_ids()``. The words are joined by spaces, so a
    byte-level BPE sees each word after the space it has in running text; each token belongs
    to the word its last character is in (a token that is only the space between two words,
    to the word after it, as GPT-2's pre-tokenizer attaches spaces). Truncated to
    ``max_length`` tokens."""
    from bisect import bisect_right

    text = " ".join(words)
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    encoding = encode_plus(tokenizer, text, add_special_tokens=add_special_tokens, max_length=max_length,
                           return_offsets=True)
    def word_of(start: int, end: int) -> int:
        last = max(end - 1, start)
        return bisect_right(starts, last + (text[last:last + 1] == " ")) - 1  # a lone space leads the next word

    word_ids = [None if sequence is None else word_of(start, end)
                for sequence, (start, end) in zip(encoding.sequence_ids, encoding.offsets)]
    return encoding, word_ids


def batch_encode(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    add_special_tokens: bool = True,
    max_length: int | None = None,
    padding: str = "longest",
    padding_side: str = "right",
    return_offsets: bool = False,
    allow_special: bool = False,
) -> dict[str, Any]:
    """Encode texts (or pairs) into int64 numpy arrays ``input_ids``, ``attention_mask``
    and ``token_type_ids`` (plus ``offsets``, shape (n, length, 2), on request).

    ``padding``: ``"longest"`` pads to the longest row, ``"max_length"`` to ``max_length``.
    """
    if padding not in ("longest", "max_length"):
        raise ValueError(f"padding must be 'longest' or 'max_length', not {padding!r}")
    if padding == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
    pad_id = tokenizer.special_id("pad")
    if pad_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no 'pad' special token to pad with")
    encodings = [
        encode_plus(tokenizer, t, pairs[i] if pairs is not None else None,
                    add_special_tokens=add_special_tokens, max_length=max_length,
                    return_offsets=return_offsets, allow_special=allow_special)
        for i, t in enumerate(texts)
    ]
    length = max_length if padding == "max_length" else None
    return pad_batch(encodings, pad_id, length, padding_side)


def _cut(e: Encoding, keep: int) -> Encoding:
    return Encoding(e.ids[:keep], e.type_ids[:keep], e.sequence_ids[:keep],
                    e.offsets[:keep] if e.offsets is not None else None)
