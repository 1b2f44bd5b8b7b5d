"""Tasks in, activations out: words aligned to tokens, and every layer's hidden states of the
frozen model computed once into a memory-mapped cache that all probes read."""
from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modkit.errors import UserError


@dataclass
class Sentence:
    words: list[str]
    ids: list[int] = field(default_factory=list)
    word_tokens: list[tuple[int, int]] = field(default_factory=list)  # [start, end) per word; (0, 0) = cut
    specials: dict[str, list[int]] = field(default_factory=dict)  # role -> token positions
    offset: int = 0  # first row of this sentence in the activation cache


@dataclass
class Target:
    sentence: int
    spans: list[tuple[int, int]]  # token [start, end) of span1 (and span2)
    label: str


def read_tasks(folder_or_file: Path, names: list[str] | None) -> dict[str, list[dict]]:
    """Task name -> rows, from one task .jsonl or a folder of them (trees.jsonl is not a task)."""
    files = sorted(folder_or_file.glob("*.jsonl")) if folder_or_file.is_dir() else [folder_or_file]
    tasks = {f.stem: f for f in files if f.stem != "trees"}
    if names:
        unknown = sorted(set(names) - set(tasks))
        if unknown:
            raise UserError(f"{folder_or_file}: no task {', '.join(unknown)} (found: {', '.join(tasks) or 'none'})")
        tasks = {n: tasks[n] for n in names}
    if not tasks:
        raise UserError(f"{folder_or_file}: no task files (*.jsonl); make them with `modkit probe-data`")
    return {name: _read_jsonl(path) for name, path in tasks.items()}


def read_trees(folder_or_file: Path) -> list[dict]:
    path = folder_or_file / "trees.jsonl" if folder_or_file.is_dir() else None
    return _read_jsonl(path) if path is not None and path.exists() else []


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise UserError(f"{path}:{lineno}: not JSON ({e})") from None
    return rows


def _special_ids(tokenizer) -> dict[str, int]:
    return {role: tokenizer.special_id(role) for role in tokenizer.special_tokens
            if tokenizer.special_id(role) is not None}


def encode_words(tokenizer, words: list[str], max_tokens: int) -> Sentence:
    """Token ids of the words with the tokenizer's special tokens around them; each word is
    encoded with the space before it, so byte-level BPE sees it as it would in running text."""
    template = tokenizer.template.single if tokenizer.template else (("$A", 0),)
    n_special = sum(1 for piece, _ in template if piece != "$A")
    role_of = {v: k for k, v in tokenizer.special_tokens.items()}
    s = Sentence(words)
    for piece, _ in template:
        if piece != "$A":
            s.specials.setdefault(role_of.get(piece, piece), []).append(len(s.ids))
            s.ids.append(tokenizer.token_to_id(piece))
            continue
        for i, word in enumerate(words):
            piece_ids = tokenizer.encode(word if i == 0 else " " + word)
            if len(s.ids) + len(piece_ids) + n_special > max_tokens:
                s.word_tokens += [(0, 0)] * (len(words) - i)  # cut: targets on these words are dropped
                break
            s.word_tokens.append((len(s.ids), len(s.ids) + len(piece_ids)))
            s.ids += piece_ids
    return s


def is_punctuation(word: str) -> bool:
    return bool(word) and all(unicodedata.category(c).startswith("P") for c in word)


def build_inputs(tokenizer, tasks: dict[str, list[dict]], trees: list[dict], max_tokens: int):
    """Unique sentences, each task's targets on token spans, and the trees' sentence indices."""
    sentences: list[Sentence] = []
    index: dict[str, int] = {}

    def sentence(words: list[str]) -> int:
        key = " ".join(words)
        if key not in index:
            index[key] = len(sentences)
            sentences.append(encode_words(tokenizer, words, max_tokens))
        return index[key]

    targets: dict[str, list[Target]] = {}
    for name, rows in tasks.items():
        targets[name] = []
        for row in rows:
            words = str(row.get("text", "")).split()
            if not words:
                continue
            si = sentence(words)
            for t in row.get("targets", []):
                spans = []
                for key in ("span1", "span2"):
                    if key in t:
                        a, b = t[key]
                        if not (0 <= a < b <= len(words)):
                            raise UserError(f"task {name}: span {t[key]} outside the sentence {' '.join(words)!r}")
                        start, end = sentences[si].word_tokens[a][0], sentences[si].word_tokens[b - 1][1]
                        spans.append((start, end))
                if spans and all(e > s for s, e in spans):
                    targets[name].append(Target(si, spans, str(t["label"])))
    tree_ids = [sentence(list(t["words"])) for t in trees]
    return sentences, targets, tree_ids


def cache_key(model_path: Path, sentences: list[Sentence]) -> str:
    h = hashlib.sha256(str(model_path.resolve()).encode())
    for f in sorted(model_path.glob("*.safetensors")) if model_path.is_dir() else []:
        h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    for s in sentences:
        h.update(json.dumps(s.ids).encode())
    return h.hexdigest()[:16]


class ActivationCache:
    """Hidden states H(0..L) of every token, float16, in ``folder/activations-KEY.f16``
    (shape layers x tokens x d_model) with a small JSON header beside it."""

    def __init__(self, folder: Path, key: str):
        self.path = folder / f"activations-{key}.f16"
        self.header = folder / f"activations-{key}.json"

    def exists(self) -> bool:
        return self.path.exists() and self.header.exists()

    def open(self) -> np.memmap:
        shape = tuple(json.loads(self.header.read_text())["shape"])
        return np.memmap(self.path, dtype=np.float16, mode="r", shape=shape)

    def create(self, shape: tuple[int, int, int]) -> np.memmap:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.header.unlink(missing_ok=True)  # the header is written last: no header, no cache
        return np.memmap(self.path, dtype=np.float16, mode="w+", shape=shape)

    def finish(self, array: np.memmap) -> None:
        array.flush()
        self.header.write_text(json.dumps({"shape": list(array.shape)}))
