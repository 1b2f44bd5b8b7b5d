"""Serving an artifact with onnxruntime: no torch imported here or below.

>>> rt = Runtime("out/")                  # checks every file's sha256 first
>>> rt.run(["some text"])                 # classification, generation... per the manifest
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from modkit.runtime.artifact import read_manifest
from modkit.errors import ArtifactError, UserError
from modkit.tokenization import load_tokenizer

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


def greedy_with_past(session, prompt: list[int], *, max_new_tokens: int,
                     eos_token_id: int | None = None) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding over a cached step graph (see :mod:`modkit.builder.export_cached`).

    Returns the new tokens (stopping before the eos) and the logits of every step."""
    past_inputs = [i for i in session.get_inputs() if i.name.startswith("past.")]
    heads, d_head = past_inputs[0].shape[1], past_inputs[0].shape[3]
    past = {i.name: np.zeros((1, heads, 0, d_head), dtype=np.float32) for i in past_inputs}
    feed, seen, tokens, all_logits = np.array([prompt], dtype=np.int64), 0, [], []
    for _ in range(max_new_tokens):
        seen += feed.shape[1]
        logits, *present = session.run(None, {"input_ids": feed, "attention_mask": np.ones((1, seen), np.int64), **past})
        all_logits.append(logits[0])
        token = int(logits[0].argmax())
        if token == eos_token_id:
            break
        tokens.append(token)
        past = dict(zip(past, present))
        feed = np.array([[token]], dtype=np.int64)
    return tokens, all_logits


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
        self.max_positions = options.get("n_positions")  # None for relative positions (T5)
        if self.task["task"] == "seq2seq":
            from modkit.runtime.seq2seq import Seq2SeqSession

            self.seq2seq = Seq2SeqSession(*(make_session(self.folder / f, provider) for f in ("encoder.onnx", "decoder.onnx")))
        else:
            self.session = make_session(self.folder / "model.onnx", provider)
        cached = self.folder / "model_with_past.onnx"
        self.with_past = make_session(cached, provider) if cached.exists() else None

    def _logits(self, batch: list[list[int]], pad_id: int) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, row in enumerate(batch):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        labels, extra = self.task["labels"], self.task.get("append_ids", [])
        max_length = self.task.get("max_length") or self.max_positions or 10**9
        if self.task.get("use_template"):  # as the classify objective encoded its training data
            batch = [self.tokenizer.encode_plus(t, max_length=max_length).ids for t in texts]
        else:
            batch = [self.tokenizer.encode(t)[: max_length - len(extra)] + extra for t in texts]
        logits = self._logits(batch, self.task.get("pad_token_id", 0))
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
            if self.with_past is not None:  # one cached step per token, within the positions
                limit = self.max_positions or 10**9
                steps = min(max_new_tokens, limit - 1)
                new, _ = greedy_with_past(self.with_past, ids[-(limit - steps):], max_new_tokens=steps,
                                          eos_token_id=eos)
            else:  # no cached graph: run the whole window again for every token
                new = self._greedy_recompute(ids, max_new_tokens, eos)
            results.append({"text": text, "generated": self.tokenizer.decode(new), "ids": new})
        return results

    def _greedy_recompute(self, ids: list[int], max_new_tokens: int, eos: int | None) -> list[int]:
        new: list[int] = []
        for _ in range(max_new_tokens):
            window = (ids + new)[-self.max_positions:] if self.max_positions else ids + new
            logits = self._logits([window], 0)
            token = int(logits[0, -1].argmax())
            if token == eos:
                break
            new.append(token)
        return new

    def transduce(self, texts: Sequence[str], *, max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        """Seq2seq: greedy generation of each text's target, with the encoder run once."""
        from modkit.runtime.seq2seq import strip_after_eos

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
