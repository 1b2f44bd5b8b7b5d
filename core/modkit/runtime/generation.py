"""Greedy, sampled and beam-search decoding in numpy, token for token as :mod:`modkit.nn.generation`.

No torch here. A model takes part through a :class:`Decoder`: an object holding one batch of
rows and their cache, which gives the logits of each row's next token (``start``, then
``step``) and keeps only some rows, in a given order (``select``: finished rows leave the
batch; beam search reorders its beams).

Sampling draws from the same random stream as ``torch.Generator().manual_seed(seed)`` on the
CPU (mt19937, one float64 uniform per vocabulary entry per step, turned into the exponential
noise ``torch.multinomial`` divides by), so a text sampled here with a seed gets the tokens
torch's ``generate`` gives that text alone with that seed. Each row has its own stream: a
text's tokens do not depend on the texts batched with it.
"""
from __future__ import annotations

import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import Field, model_validator

from modkit.generation_config import begin_step
from modkit.options import Options
from modkit.runtime.processors import banned_words, penalize_repeats, suppressed
from modkit.runtime.sessions import softmax

_NEG = -1.0e9  # the torch beam search's "impossible" score; the same constant keeps ties identical


class Decoder(Protocol):
    def start(self) -> np.ndarray:
        """Logits (rows, V) of each row's first new token."""

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Append one token (rows,) to every row; logits (rows, V) of the next one."""

    def select(self, rows: np.ndarray) -> None:
        """Keep these rows (indices into the current rows, repeats allowed), in this order."""


class TorchGenerator:
    """The CPU stream of ``torch.Generator().manual_seed(seed)``: mt19937 seeded as torch seeds it."""

    def __init__(self, seed: int):
        self.bits = np.random.MT19937(0)
        self.bits._legacy_seeding(seed & 0xFFFFFFFF)  # torch keeps the low 32 bits, then init_genrand

    def uniform(self, n: int) -> np.ndarray:
        """n float64 in [0, 1): torch joins two 32-bit draws and keeps the low 53 bits."""
        raw = self.bits.random_raw(2 * n).astype(np.uint64)
        joined = (raw[0::2] << np.uint64(32)) | raw[1::2]
        return (joined & np.uint64((1 << 53) - 1)).astype(np.float64) * 2.0 ** -53

    def exponential(self, n: int) -> np.ndarray:
        """Exp(1) noise as float32, as ``Tensor.exponential_`` makes it."""
        return (-np.log1p(-self.uniform(n))).astype(np.float32)


class StopDecoding(Exception):
    """Raised by a :class:`Watcher` to end decoding now (a stop text was reached, nobody waits)."""


class Watcher:
    """Watches decoding step by step: a server streams tokens as they come, and stops decoding
    that nobody waits for any more. Set in :data:`watcher` around a task's ``run``; every task
    that decodes through :func:`decode` is watched without knowing it."""

    def step(self) -> None:
        """Before each decoding step (greedy, sampled or beam search); may raise StopDecoding."""

    def tokens(self, rows: np.ndarray, tokens: np.ndarray, finished: np.ndarray, logits: np.ndarray) -> None:
        """After each greedy or sampled step: the rows' indices (in the decoded batch), their new
        tokens, which of them are the eos, and the model's logits (before any processing) they
        were drawn from; may raise StopDecoding. Beam search reports no tokens (its beams change
        until the end)."""


#: the watcher of the decoding running in this thread (None: unwatched)
watcher: ContextVar[Watcher | None] = ContextVar("modkit_decoding_watcher", default=None)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def filter_logits(logits: np.ndarray, *, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Keep the ``top_k`` best logits and the smallest set whose probability reaches ``top_p``
    (the others become -inf), as the torch ``filter_logits`` does."""
    if top_k > 0:
        kth = -np.partition(-logits, min(top_k, logits.shape[-1]) - 1, axis=-1)[..., min(top_k, logits.shape[-1]) - 1]
        logits = np.where(logits < kth[..., None], -np.inf, logits).astype(logits.dtype)
    if top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        sorted_probs = softmax(np.take_along_axis(logits, order, -1))
        drop_sorted = np.cumsum(sorted_probs, -1, dtype=np.float32) - sorted_probs >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        logits = np.where(drop, -np.inf, logits).astype(logits.dtype)
    return logits


def _next_tokens(logits: np.ndarray, sampling: Sampling | None, rngs: list[TorchGenerator]) -> np.ndarray:
    if sampling is None:
        return logits.argmax(-1)
    scores = filter_logits(logits.astype(np.float32) / np.float32(sampling.temperature),
                           top_k=sampling.top_k, top_p=sampling.top_p)
    probs = softmax(scores).astype(np.float32)
    noise = np.stack([rng.exponential(probs.shape[-1]) for rng in rngs])
    return (probs / noise).argmax(-1)  # torch.multinomial's draw of one sample


@dataclass(frozen=True)
class Constraints:
    """transformers' logits processors that decoding applies, as :func:`modkit.nn.generation.constrain`."""

    min_new_tokens: int = 0
    min_length: int = 0  # counts the row's prefix (prompt or decoder start) too
    no_repeat_ngram_size: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    repetition_penalty: float = 1.0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()


def repeated_ngram_tokens(sequence: list[int], size: int) -> list[int]:
    """The tokens that would complete an n-gram of ``size`` already in ``sequence``."""
    start = len(sequence) + 1 - size  # the n-gram to complete begins here
    if start < 1:
        return []
    prefix = sequence[start:]
    return [sequence[i + size - 1] for i in range(start) if sequence[i:i + size - 1] == prefix]


def constrain(scores: np.ndarray, t: int, sequences: list[list[int]], *, max_new_tokens: int,
              eos_token_id: int | None, constraints: Constraints) -> np.ndarray:
    """``constraints`` applied to the scores (rows, V) of new token ``t`` of rows whose tokens so
    far (prefix, then ``t`` new ones) are ``sequences``, in transformers' order."""
    c, vocab = constraints, scores.shape[-1]
    scores = scores.copy()
    for row, sequence in enumerate(sequences):
        if c.repetition_penalty != 1.0:
            penalize_repeats(scores[row], sequence, c.repetition_penalty)
        if c.no_repeat_ngram_size > 0:
            banned = [b for b in repeated_ngram_tokens(sequence, c.no_repeat_ngram_size) if b < vocab]
            scores[row, banned] = -np.inf
        if c.bad_words_ids:
            scores[row, [b for b in banned_words(sequence, c.bad_words_ids, eos_token_id) if b < vocab]] = -np.inf
        if eos_token_id is not None and (t < c.min_new_tokens or len(sequence) < c.min_length):
            scores[row, eos_token_id] = -np.inf
        if c.forced_bos_token_id is not None and len(sequence) == 1:
            scores[row] = _only(vocab, c.forced_bos_token_id)
    if c.forced_eos_token_id is not None and t == max_new_tokens - 1:
        scores[:] = _only(vocab, c.forced_eos_token_id)
    if c.suppress_tokens:
        scores[:, suppressed(c.suppress_tokens, vocab)] = -np.inf
    for row, sequence in enumerate(sequences):  # the first new token (after the prefix and any forced one)
        if c.begin_suppress_tokens and t == begin_step(len(sequence) - t, c.forced_bos_token_id):
            scores[row, suppressed(c.begin_suppress_tokens, vocab)] = -np.inf
    return scores


def _only(vocab: int, token: int) -> np.ndarray:
    forced = np.full(vocab, -np.inf, np.float32)
    forced[token] = 0.0
    return forced


def generate(decoder: Decoder, rows: int, *, max_new_tokens: int, eos_token_id: int | None = None,
             sampling: Sampling | None = None, seeds: list[int] | None = None,
             prefixes: list[list[int]] | None = None, constraints: Constraints = Constraints()) -> list[list[int]]:
    """Greedy (or, with ``sampling``, sampled) decoding; each row's new tokens before its eos.

    A row leaves the batch as soon as it produces the eos, so the batch shrinks as rows finish.
    ``seeds``: one per row when sampling. ``prefixes``: each row's tokens before the new ones
    (its prompt, or the decoder start), which ``constraints`` count."""
    if sampling is not None and (seeds is None or len(seeds) != rows):
        raise ValueError("sampling needs one seed per row")
    rngs = [TorchGenerator(s) for s in seeds] if sampling is not None else []
    prefixes = prefixes or [[] for _ in range(rows)]
    out: list[list[int]] = [[] for _ in range(rows)]
    alive = np.arange(rows)  # original index of each row still in the batch
    watch = watcher.get()
    if watch:
        watch.step()
    logits = decoder.start()
    for i in range(max_new_tokens):
        raw = logits
        if constraints != Constraints():  # (no sequences to build otherwise)
            logits = constrain(logits, i, [prefixes[r] + out[r] for r in alive], max_new_tokens=max_new_tokens,
                               eos_token_id=eos_token_id, constraints=constraints)
        tokens = _next_tokens(logits, sampling, [rngs[r] for r in alive] if rngs else rngs)
        finished = tokens == eos_token_id if eos_token_id is not None else np.zeros(len(tokens), bool)
        if watch:
            watch.tokens(alive, tokens, finished, raw)
            watch.step()
        for r, t, f in zip(alive, tokens.tolist(), finished):
            if not f:
                out[r].append(t)
        if finished.all() or i == max_new_tokens - 1:
            break
        if finished.any():
            keep = np.flatnonzero(~finished)
            decoder.select(keep)
            alive, tokens = alive[keep], tokens[keep]
        logits = decoder.step(tokens)
    return out


def beam_search(decoder: Decoder, rows: int, *, num_beams: int, max_new_tokens: int,
                eos_token_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | Literal["never"] = False, prefixes: list[list[int]] | None = None,
                constraints: Constraints = Constraints()) -> list[list[int]]:
    """Beam search, step for step as :func:`modkit.nn.generation.beam_search` (and so
    transformers' ``generate(num_beams=...)``) does it; each row's best hypothesis before eos.

    The decoder starts with ``rows`` rows, one per input; each is copied into ``num_beams``.
    ``prefixes`` and ``constraints`` as :func:`generate`'s, applied to the log-probabilities."""
    prefixes = prefixes or [[] for _ in range(rows)]
    batch, keep = rows, 2 * num_beams
    logits = decoder.start()
    decoder.select(np.repeat(np.arange(batch), num_beams))
    logits = np.repeat(logits, num_beams, axis=0)
    fill = -1
    running = np.full((batch, num_beams, max_new_tokens), fill, dtype=np.int64)
    running_scores = np.zeros((batch, num_beams), np.float32)
    running_scores[:, 1:] = _NEG  # the beams start identical: expand only the first
    finished = running.copy()
    finished_scores = np.full((batch, num_beams), _NEG, np.float32)
    finished_len = np.zeros((batch, num_beams), np.int64)
    is_finished = np.zeros((batch, num_beams), bool)
    improvable = np.ones((batch, 1), bool)
    top_beams = np.arange(keep) < num_beams
    row_offset = np.arange(batch)[:, None] * num_beams
    watch = watcher.get()
    for t in range(max_new_tokens):
        if watch:
            watch.step()
        log_probs = _log_softmax(logits.astype(np.float32))
        if constraints != Constraints():
            sequences = [prefixes[b] + running[b, k, :t].tolist() for b in range(batch) for k in range(num_beams)]
            log_probs = constrain(log_probs, t, sequences, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                                  constraints=constraints)
        vocab = log_probs.shape[-1]
        scores = (log_probs.reshape(batch, num_beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)
        cand_index = _topk(scores, keep)
        cand_scores = np.take_along_axis(scores, cand_index, 1)
        cand_beam, cand_token = cand_index // vocab, cand_index % vocab
        candidates = np.take_along_axis(running, cand_beam[:, :, None], 1).copy()
        candidates[:, :, t] = cand_token
        hits = np.full(cand_token.shape, t + 1 >= max_new_tokens)
        if eos_token_id is not None:
            hits |= cand_token == eos_token_id

        # the best num_beams candidates that did not just finish keep running
        live_scores = cand_scores + hits.astype(np.float32) * np.float32(_NEG)
        nxt = _topk(live_scores, num_beams)
        running = np.take_along_axis(candidates, nxt[:, :, None], 1)
        running_scores = np.take_along_axis(live_scores, nxt, 1)
        source_beam = np.take_along_axis(cand_beam, nxt, 1)

        # finished candidates among the top num_beams compete with the finished hypotheses
        just_finished = hits & top_beams[None, :]
        final = cand_scores / np.float32((t + 1) ** length_penalty)
        final = final + (is_finished.all(-1, keepdims=True) & (early_stopping is True)) * np.float32(_NEG)
        final = final + (~improvable) * np.float32(_NEG)
        final = (final + (~just_finished) * np.float32(_NEG)).astype(np.float32)
        pool_scores = np.concatenate([finished_scores, final], 1)
        best = _topk(pool_scores, num_beams)
        finished = np.take_along_axis(np.concatenate([finished, candidates], 1), best[:, :, None], 1)
        finished_scores = np.take_along_axis(pool_scores, best, 1)
        finished_len = np.take_along_axis(
            np.concatenate([finished_len, np.full(cand_token.shape, t + 1)], 1), best, 1)
        is_finished = np.take_along_axis(np.concatenate([is_finished, just_finished], 1), best, 1)

        hypothetical = max_new_tokens if early_stopping == "never" and length_penalty > 0 else t + 1
        best_running = running_scores[:, :1] / np.float32(hypothetical ** length_penalty)
        worst_finished = np.where(is_finished, finished_scores.min(1, keepdims=True), np.float32(_NEG))
        improvable = improvable & (best_running > worst_finished).any(-1, keepdims=True)
        all_full = bool(is_finished.all()) and early_stopping is True
        if not improvable.any() or all_full or hits.all():
            break
        decoder.select((source_beam + row_offset).reshape(-1))
        logits = decoder.step(running[:, :, t].reshape(-1))
    return [_before_eos(finished[b, 0, : finished_len[b, 0]].tolist(), eos_token_id) for b in range(batch)]


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, best first; ties keep the lower index (as torch.topk)."""
    if k < x.shape[-1]:
        part = np.sort(np.argpartition(-x, k - 1, axis=-1)[..., :k], -1)
    else:
        part = np.broadcast_to(np.arange(x.shape[-1]), x.shape)
    order = np.argsort(-np.take_along_axis(x, part, -1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, -1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _before_eos(tokens: list[int], eos: int | None) -> list[int]:
    return tokens[:tokens.index(eos)] if eos is not None and eos in tokens else tokens


class GenerationOptions(Options):
    """Run options shared by generating tasks (their options models extend this one). What a
    request leaves unset comes from the artifact's generation defaults (the manifest's
    ``generation``: a Hugging Face checkpoint's generation config), then from the plain defaults."""

    do_sample: bool | None = Field(None, description="Sample instead of greedy decoding; default: sample when "
                                                     "temperature, top_k or top_p is given.")
    temperature: float | None = Field(None, gt=0, description="Divide the logits by this before sampling (default 1).")
    top_k: int | None = Field(None, ge=0, description="Sample among the k most likely tokens only (0 = all).")
    top_p: float | None = Field(None, gt=0, le=1, description="Sample among the fewest tokens whose probability "
                                                            "reaches p (nucleus sampling; 1 = all).")
    seed: int | None = Field(None, ge=0, lt=2 ** 32, description="Random seed of each text's sampling (the same "
                                                                "tokens as torch's generate with this seed); "
                                                                "default a fresh one per text.")
    num_beams: int | None = Field(None, ge=1, le=64, description="Beam search with this many beams (1 = no beam "
                                                               "search); default the artifact's, else 1 (1 when "
                                                               "sampling).")
    length_penalty: float | None = Field(None, description="Beam search: a finished beam scores sum(log p) / "
                                                           "length ** this; default the artifact's, else 1.")
    early_stopping: bool | Literal["never"] | None = Field(
        None, description="Beam search: true stops a text once num_beams hypotheses finished; \"never\" assumes "
                          "the longest length; default the artifact's, else false.")
    no_repeat_ngram_size: int | None = Field(None, ge=0, description="No n-gram of this many tokens (prompt "
                                                                    "included) occurs twice; 0 = off; default "
                                                                    "the artifact's, else 0.")
    repetition_penalty: float | None = Field(None, gt=0, description="A token already in the text (prompt "
                                                                   "included) scores s / p where s > 0, else s * p; "
                                                                   "1 = off; default the artifact's, else 1.")
    min_new_tokens: int | None = Field(None, ge=0, description="No end token before this many new tokens; "
                                                              "replaces the artifact's min_length.")

    @model_validator(mode="after")
    def _beams_do_not_sample(self):
        if (self.num_beams or 1) > 1 and self.sampling() is not None:
            raise ValueError("beam search does not sample: use num_beams = 1 with sampling options")
        return self

    def sampling(self) -> Sampling | None:
        given = any(v is not None for v in (self.temperature, self.top_k, self.top_p))
        if not (self.do_sample if self.do_sample is not None else given):
            return None
        return Sampling(temperature=self.temperature or 1.0, top_k=self.top_k or 0,
                        top_p=1.0 if self.top_p is None else self.top_p)


def decode(decoder: Decoder, rows: int, options: GenerationOptions, *, max_new_tokens: int,
           eos_token_id: int | None, prefixes: list[list[int]] | None = None,
           defaults: dict | None = None) -> list[list[int]]:
    """Greedy, sampled or beam-search decoding as ``options`` ask; each row's tokens before eos.

    ``defaults`` (an artifact's generation record, :mod:`modkit.generation_config`) fill what
    ``options`` leave unset: beams, length penalty, early stopping, n-gram size, repetition
    penalty, minimum length; and the forced, banned and suppressed tokens no option sets.
    ``prefixes``: each row's tokens before the new ones (the prompt, or the decoder start),
    which n-grams, repetitions and lengths count."""
    defaults = defaults or {}
    sampling = options.sampling()

    def pick(name: str, plain):
        given = getattr(options, name)
        return given if given is not None else defaults.get(name, plain)

    constraints = Constraints(min_new_tokens=options.min_new_tokens or 0,
                              # as in transformers, min_new_tokens replaces the min_length
                              min_length=defaults.get("min_length", 0) if options.min_new_tokens is None else 0,
                              no_repeat_ngram_size=pick("no_repeat_ngram_size", 0),
                              forced_bos_token_id=defaults.get("forced_bos_token_id"),
                              forced_eos_token_id=defaults.get("forced_eos_token_id"),
                              repetition_penalty=pick("repetition_penalty", 1.0),
                              bad_words_ids=tuple(map(tuple, defaults.get("bad_words_ids", ()))),
                              suppress_tokens=tuple(defaults.get("suppress_tokens", ())),
                              begin_suppress_tokens=tuple(defaults.get("begin_suppress_tokens", ())))
    num_beams = 1 if sampling is not None and options.num_beams is None else pick("num_beams", 1)
    if num_beams > 1:  # the options refuse sampling with beams
        return beam_search(decoder, rows, num_beams=num_beams, max_new_tokens=max_new_tokens,
                           eos_token_id=eos_token_id, length_penalty=pick("length_penalty", 1.0),
                           early_stopping=pick("early_stopping", False), prefixes=prefixes, constraints=constraints)
    seeds = None
    if sampling is not None:
        seeds = [options.seed if options.seed is not None else secrets.randbits(32) for _ in range(rows)]
    return generate(decoder, rows, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                    sampling=sampling, seeds=seeds, prefixes=prefixes, constraints=constraints)
