"""Serving an artifact with onnxruntime: no torch imported here or below.

>>> rt = Runtime("out/")                  # checks every file's sha256 first
>>> rt.run(["some text"])                 # classification, generation... per the manifest
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .artifact import read_manifest
from .errors import ArtifactError, UserError
from .tokenization import load_tokenizer

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(path: Path, provider: str):
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise UserError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    name = PROVIDERS[provider]
    if name not in ort.get_available_providers():
        raise UserError(f"onnxruntime here has no {name} (available: {', '.join(ort.get_available_providers())}); "
                        "for --provider cuda install onnxruntime-gpu with a matching CUDA")
    if not path.exists():
        raise ArtifactError(f"{path}: missing; was the artifact built with [export] onnx = true?")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[name])


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Runtime:
    """An artifact loaded for inference: its tokenizer and its ONNX graph(s)."""

    def __init__(self, folder: str | Path, *, provider: str = "cpu", registry=None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.task: dict[str, Any] = self.manifest["task"]
        self.tokenizer = load_tokenizer(self.folder, registry=registry)
        options = self.manifest["components"]["backbone"]["options"]
        self.max_positions = options.get("n_positions") or options.get("max_position_embeddings")
        if self.task["task"] == "seq2seq":
            from .runtime_seq2seq import Seq2SeqSession

            self.seq2seq = Seq2SeqSession(*(make_session(self.folder / f, provider) for f in ("encoder.onnx", "decoder.onnx")))
        else:
            self.session = make_session(self.folder / "model.onnx", provider)

    def _logits(self, batch: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, row in enumerate(batch):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0], mask

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        labels, extra = self.task["labels"], self.task.get("append_ids", [])
        max_length = self.task.get("max_length") or self.max_positions or 10**9
        if self.task.get("use_template"):  # as the classify objective encoded its training data
            batch = [self.tokenizer.encode_plus(t, max_length=max_length).ids for t in texts]
        else:
            batch = [self.tokenizer.encode(t)[: max_length - len(extra)] + extra for t in texts]
        logits, _ = self._logits(batch, self.task.get("pad_token_id", 0))
        probs = softmax(logits.astype(np.float64))
        return [{"text": t, "label": labels[int(p.argmax())],
                 "probabilities": {label: round(float(q), 6) for label, q in zip(labels, p)}}
                for t, p in zip(texts, probs)]

    def generate(self, texts: Sequence[str], *, max_new_tokens: int = 32) -> list[dict[str, Any]]:
        """Greedy continuation of each text, stopping at the eos token."""
        eos = self.task.get("eos_token_id")
        results = []
        for text in texts:
            ids = self.tokenizer.encode(text) or ([eos] if eos is not None else [0])
            new: list[int] = []
            for _ in range(max_new_tokens):
                window = (ids + new)[-self.max_positions:] if self.max_positions else ids + new
                logits, _ = self._logits([window], 0)
                token = int(logits[0, -1].argmax())
                if token == eos:
                    break
                new.append(token)
            results.append({"text": text, "generated": self.tokenizer.decode(new), "ids": new})
        return results

    def transduce(self, texts: Sequence[str], *, max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """Seq2seq: greedy generation of each text's target, with the encoder run once."""
        from .runtime_seq2seq import strip_after_eos

        eos, pad = self.task["eos_token_id"], self.task.get("pad_token_id", 0)
        limit = (self.task.get("max_length") or 10**9) - 1
        batch = [self.tokenizer.encode(t)[:limit] + [eos] for t in texts]  # as seq2seq trained
        width = max(len(b) for b in batch)
        ids = np.array([b + [pad] * (width - len(b)) for b in batch], dtype=np.int64)
        mask = np.array([[1] * len(b) + [0] * (width - len(b)) for b in batch], dtype=np.int64)
        tokens, _ = self.seq2seq.greedy(ids, mask, max_new_tokens=max_new_tokens or self.task.get("max_new_tokens", 32),
                                        decoder_start_token_id=self.task["decoder_start_token_id"], eos_token_id=eos)
        return [{"text": t, "generated": self.tokenizer.decode(row), "ids": row}
                for t, row in zip(texts, strip_after_eos(tokens, eos))]

    def run(self, texts: Sequence[str], *, max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        kind = self.task["task"]
        if kind == "seq2seq":
            return self.transduce(texts, max_new_tokens=max_new_tokens)
        if kind == "classify":
            return self.classify(texts)
        if kind == "generate":
            return self.generate(texts, max_new_tokens=max_new_tokens or 32)
        raise ArtifactError(f"{self.folder}: task {kind!r} is not served by this modkit version")
