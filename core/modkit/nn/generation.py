"""Token-by-token decoding shared by every generating model (decoder-only or encoder-decoder).

A model takes part through a *step function*: ``step(tokens, cache) -> (logits, cache)``
where ``tokens`` (B, T) are the tokens not yet seen by the cache (the whole prompt on the
first call, with ``cache=None``), and ``logits`` (B, V) are for the position after the last
of them. The step function owns masks and positions, so this module knows nothing of
architectures. Beam search also reorders the cache between steps; :func:`reorder_cache`
does that for any nesting of tuples, lists and dicts of tensors with the batch first.

Encoder-decoders take part through two methods (see :func:`generate_seq2seq`):
``encode(input_ids, attention_mask) -> encoder_hidden (B, S, D)`` and
``decode_step(decoder_input_ids, encoder_hidden, attention_mask, past, use_cache)
-> (logits (B, V) of the last position, cache)``. :class:`Seq2SeqGenerationMixin` then
gives such a model transformers' ``generate``; any other model gets the same signature from
:class:`GenerationMixin` by writing ``_generate`` (GPT does).
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from modkit.generation_config import KEYS, begin_step, generation_record
from modkit.nn.processors import ban_words, penalize_repeats, suppress

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` best logits and the smallest set whose probability reaches ``top_p``."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _only(scores: torch.Tensor, token: int) -> torch.Tensor:
    forced = torch.full_like(scores, float("-inf"))
    forced[:, token] = 0.0
    return forced


def ban_repeated_ngrams(sequences: torch.Tensor, scores: torch.Tensor, size: int) -> torch.Tensor:
    """transformers' ``NoRepeatNGramLogitsProcessor``: a token that would complete an n-gram of
    ``size`` already in a row of ``sequences`` (B, L) (prompt included) scores -inf."""
    length = sequences.shape[-1]
    if length < size:
        return scores
    prefix = sequences[:, length + 1 - size:]  # the n-gram's first size-1 tokens: the row's end
    windows = sequences.unfold(1, size, 1)
    matches = (windows[..., :-1] == prefix[:, None]).all(-1)
    vocab = scores.shape[-1]  # a window that does not match bans the spare column past the vocab
    banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
    return scores.masked_fill(banned[:, :vocab], float("-inf"))


def constrain(
    scores: torch.Tensor,
    t: int,
    *,
    sequences: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    min_new_tokens: int = 0,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
    forced_bos_token_id: int | None = None,
    forced_eos_token_id: int | None = None,
    repetition_penalty: float = 1.0,
    prompt_padding: torch.Tensor | None = None,
    bad_words_ids: list[list[int]] | None = None,
    suppress_tokens: list[int] | None = None,
    begin_suppress_tokens: list[int] | None = None,
) -> torch.Tensor:
    """transformers' logits processors, in its order, for new token ``t`` of rows whose
    tokens so far (the prompt, or the decoder start, and ``t`` new ones) are ``sequences``.

    A token already in a row scores s / ``repetition_penalty`` (s > 0) or s * it, leaving out
    the row's ``prompt_padding`` (B,) leading tokens; no n-gram of ``no_repeat_ngram_size``
    repeats; no word of ``bad_words_ids`` is completed; the eos is barred before
    ``min_new_tokens`` new tokens and while a row is shorter than ``min_length`` (prompt
    included); ``forced_bos_token_id`` is the only choice when the sequence so far is one token
    long (an encoder-decoder's first step); ``forced_eos_token_id`` the only choice for the last
    of ``max_new_tokens``; ``suppress_tokens`` are never chosen, ``begin_suppress_tokens`` not
    as the first new token (the second after a forced first one, as transformers counts it).
    """
    length = sequences.shape[-1]
    if repetition_penalty != 1.0:
        scores = penalize_repeats(sequences, scores, repetition_penalty, prompt_padding)
    if no_repeat_ngram_size > 0:
        scores = ban_repeated_ngrams(sequences, scores, no_repeat_ngram_size)
    if bad_words_ids:
        scores = ban_words(sequences, scores, bad_words_ids, eos_token_id)
    if (t < min_new_tokens or length < min_length) and eos_token_id is not None:
        scores = scores.clone()
        scores[:, eos_token_id] = float("-inf")
    if forced_bos_token_id is not None and length == 1:
        scores = _only(scores, forced_bos_token_id)
    if forced_eos_token_id is not None and t == max_new_tokens - 1:
        scores = _only(scores, forced_eos_token_id)
    if suppress_tokens:
        scores = suppress(scores, suppress_tokens)
    if begin_suppress_tokens and t == begin_step(length - t, forced_bos_token_id):
        scores = suppress(scores, begin_suppress_tokens)
    return scores


@torch.no_grad()
def generate(
    step: StepFn,
    prompt: torch.Tensor,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    **constraints: Any,
) -> torch.Tensor:
    """Greedy or sampled decoding. Returns the new tokens (B, <= max_new_tokens).

    Rows that produced ``eos_token_id`` are padded with ``pad_token_id`` (default: the eos)
    afterwards; decoding stops early once every row has. ``constraints``: :func:`constrain`'s
    keyword arguments from ``min_new_tokens`` on.
    """
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    logits, cache = step(prompt, None)
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    out = []
    for i in range(max_new_tokens):
        sequences = torch.cat([prompt, torch.stack(out, dim=1)], dim=1) if out else prompt
        logits = constrain(logits, i, sequences=sequences, max_new_tokens=max_new_tokens,
                           eos_token_id=eos_token_id, **constraints)
        if do_sample:
            scores = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
            token = torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]
        else:
            token = logits.argmax(-1)
        if eos_token_id is not None:
            token = token.masked_fill(done, pad)
            done |= token == eos_token_id
        out.append(token)
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        logits, cache = step(token[:, None], cache)
    return torch.stack(out, dim=1) if out else prompt.new_zeros((prompt.shape[0], 0))


def reorder_cache(cache: Any, index: torch.Tensor) -> Any:
    """Select rows ``index`` of every tensor in a cache (nested tuples, lists, dicts)."""
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index)
    if isinstance(cache, (list, tuple)):
        return type(cache)(reorder_cache(c, index) for c in cache)
    if isinstance(cache, dict):
        return {k: reorder_cache(v, index) for k, v in cache.items()}
    return cache  # None and other non-tensors are shared by every row


_NEG = -1.0e9  # transformers' "impossible" score; the same constant keeps ties identical


@torch.no_grad()
def beam_search(
    step: StepFn,
    prompt: torch.Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool | Literal["never"] = False,
    num_return_sequences: int = 1,
    **constraints: Any,
) -> torch.Tensor:
    """Beam search, step for step as transformers' ``generate(num_beams=...)`` does it.

    ``prompt`` is (B * num_beams, T): each row repeated ``num_beams`` times, consecutively.
    A finished hypothesis scores sum(log p) / length ** length_penalty (length counts new
    tokens). ``early_stopping``: True stops a row once it has ``num_beams`` finished
    hypotheses; False stops when the best running beam, at its current length, cannot beat
    the worst finished one; "never" assumes the longest length when the penalty favours it.
    ``constraints`` are :func:`constrain`'s, applied to the log-probabilities.
    Returns the ``num_return_sequences`` best hypotheses' new tokens per row, best first
    (B * num_return_sequences, <= max_new_tokens), padded with the pad id (or the eos).
    """
    flat, device = prompt.shape[0], prompt.device
    if flat % num_beams:
        raise ValueError(f"prompt rows ({flat}) must be a multiple of num_beams ({num_beams})")
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be 1..num_beams ({num_beams})")
    batch = flat // num_beams
    keep = 2 * num_beams  # candidates kept per row, so num_beams survive even if all hit eos
    # transformers fills with `pad or eos`, so a pad id of 0 (T5) falls back to the eos
    fill = (pad_token_id or eos_token_id) if eos_token_id is not None else -1
    running = torch.full((batch, num_beams, max_new_tokens), fill, dtype=torch.long, device=device)
    running_scores = torch.zeros(batch, num_beams, device=device)
    running_scores[:, 1:] = _NEG  # the beams start identical: expand only the first
    finished = running.clone()
    finished_scores = torch.full((batch, num_beams), _NEG, device=device)
    finished_len = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
    is_finished = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
    top_beams = torch.arange(keep, device=device) < num_beams
    row_offset = torch.arange(batch, device=device)[:, None] * num_beams

    prompts = prompt.view(batch, num_beams, -1)  # a row's beams share its prompt
    logits, cache = step(prompt, None)
    for t in range(max_new_tokens):
        sequences = torch.cat([prompts, running[:, :, :t]], dim=2).view(flat, -1)
        log_probs = constrain(torch.log_softmax(logits.float(), dim=-1), t, sequences=sequences,
                              max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, **constraints)
        vocab = log_probs.shape[-1]
        scores = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, -1)
        cand_scores, cand_index = torch.topk(scores, keep)
        cand_beam, cand_token = cand_index // vocab, cand_index % vocab
        candidates = running.gather(1, cand_beam[:, :, None].expand(-1, -1, max_new_tokens)).clone()
        candidates[:, :, t] = cand_token
        hits = torch.full_like(cand_token, t + 1 >= max_new_tokens, dtype=torch.bool)
        if eos_token_id is not None:
            hits |= cand_token == eos_token_id

        # the best num_beams candidates that did not just finish keep running
        live_scores = cand_scores + hits.float() * _NEG
        nxt = torch.topk(live_scores, num_beams).indices
        running = candidates.gather(1, nxt[:, :, None].expand(-1, -1, max_new_tokens))
        running_scores = live_scores.gather(1, nxt)
        source_beam = cand_beam.gather(1, nxt)

        # finished candidates among the top num_beams compete with the finished hypotheses
        just_finished = hits & top_beams[None, :]
        final = cand_scores / ((t + 1) ** length_penalty)
        final += (is_finished.all(-1, keepdim=True) & (early_stopping is True)).float() * _NEG
        final += (~improvable).float() * _NEG
        final += (~just_finished) * _NEG
        best = torch.topk(torch.cat([finished_scores, final], 1), num_beams).indices
        finished = torch.cat([finished, candidates], 1).gather(
            1, best[:, :, None].expand(-1, -1, max_new_tokens))
        finished_scores = torch.cat([finished_scores, final], 1).gather(1, best)
        finished_len = torch.cat([finished_len, torch.full_like(cand_token, t + 1)], 1).gather(1, best)
        is_finished = torch.cat([is_finished, just_finished], 1).gather(1, best)

        hypothetical = max_new_tokens if early_stopping == "never" and length_penalty > 0 else t + 1
        best_running = running_scores[:, :1] / (hypothetical ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(1, keepdim=True).values, _NEG)
        improvable = improvable & (best_running > worst_finished).any(-1, keepdim=True)
        all_full = bool(is_finished.all()) and early_stopping is True
        if not bool(improvable.any()) or all_full or bool(hits.all()):
            break
        cache = reorder_cache(cache, (source_beam + row_offset).view(-1))
        logits, cache = step(running[:, :, t].reshape(-1, 1), cache)
    length = int(finished_len[:, :num_return_sequences].max())
    return finished[:, :num_return_sequences, :length].reshape(batch * num_return_sequences, length)


def decode(step: StepFn, prompt: torch.Tensor, *, num_beams: int = 1, max_new_tokens: int,
           length_penalty: float = 1.0, early_stopping: bool | Literal["never"] = False,
           num_return_sequences: int = 1, **options: Any) -> torch.Tensor:
    """:func:`beam_search` when ``num_beams`` > 1 (``prompt`` holds each row ``num_beams``
    times), else :func:`generate`; ``options`` are :func:`generate`'s. Returns the new tokens,
    ``num_return_sequences`` rows per prompt row."""
    if num_beams == 1:
        if num_return_sequences != 1:
            raise ValueError("num_return_sequences > 1 needs beam search (num_beams > 1)")
        return generate(step, prompt, max_new_tokens=max_new_tokens, **options)
    if options.pop("do_sample", False):
        raise ValueError("beam search with sampling is not supported; use num_beams=1")
    for sampling_only in ("temperature", "top_k", "top_p", "generator"):
        options.pop(sampling_only, None)  # as in transformers, they only matter when sampling
    return beam_search(step, prompt, num_beams=num_beams, max_new_tokens=max_new_tokens,
                       length_penalty=length_penalty, early_stopping=early_stopping,
                       num_return_sequences=num_return_sequences, **options)


@torch.no_grad()
def generate_seq2seq(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    decoder_start_token_id: int,
    num_beams: int = 1,
    use_cache: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Generate with an encoder-decoder: the encoder runs once, the decoder step by step.

    With ``use_cache`` the decoder keeps its self-attention keys/values and the encoder's
    cross-attention keys/values (computed at the first step); without it every step reruns
    the decoder on the whole prefix (slow; for checking the cache). ``options`` are
    :func:`decode`'s. Returns (B * num_return_sequences, 1 + new) starting with
    ``decoder_start_token_id``, as transformers does.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if num_beams > 1:  # each row's beams read the same encoder output
        input_ids = input_ids.repeat_interleave(num_beams, dim=0)
        attention_mask = attention_mask.repeat_interleave(num_beams, dim=0)
    encoder_hidden = model.encode(input_ids, attention_mask)
    start = torch.full((input_ids.shape[0], 1), decoder_start_token_id, dtype=torch.long,
                       device=input_ids.device)

    def cached_step(tokens, cache):
        return model.decode_step(tokens, encoder_hidden, attention_mask, cache, use_cache=True)

    def uncached_step(tokens, prefix):  # the "cache" is the prefix decoded so far
        prefix = tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
        logits, _ = model.decode_step(prefix, encoder_hidden, attention_mask, None, use_cache=False)
        return logits, prefix

    new = decode(cached_step if use_cache else uncached_step, start, num_beams=num_beams,
                 max_new_tokens=max_new_tokens, **options)
    return torch.cat([start[:new.shape[0]], new], dim=1)


#: what ``generate`` does when neither the call nor the model's generation defaults say
PLAIN = dict(min_new_tokens=0, min_length=0, num_beams=1, length_penalty=1.0, early_stopping=False,
             no_repeat_ngram_size=0, repetition_penalty=1.0, bad_words_ids=None, suppress_tokens=None,
             begin_suppress_tokens=None)
MAX_NEW_TOKENS = 20  # as transformers without a max_length


class GenerationMixin:
    """transformers' ``generate`` arguments for any model whose class implements
    ``_generate(input_ids, attention_mask, **options)`` (options: :func:`decode`'s, plus the
    model's own, such as ``use_cache``). Unlike transformers, ``top_k`` defaults to 0 (off).

    What a call leaves None comes from the model's generation defaults, as transformers takes
    it from the model's generation config: the checkpoint's record (:func:`set_generation_defaults`;
    modkit.load_model sets it from a Hugging Face folder or an artifact's manifest), else the
    token ids and forced tokens of ``self.config``; then :data:`PLAIN`. Without
    ``max_new_tokens``, a ``max_length`` default counts the prompt (or the decoder start) too.
    ``do_sample=True`` without ``num_beams`` samples without beams whatever the defaults say."""

    #: the checkpoint's generation defaults (a :mod:`modkit.generation_config` record), or None
    generation_defaults: dict[str, Any] | None = None

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_beams: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | Literal["never"] | None = None,
        num_return_sequences: int = 1,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        forced_bos_token_id: int | None = None,
        forced_eos_token_id: int | None = None,
        no_repeat_ngram_size: int | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        repetition_penalty: float | None = None,
        bad_words_ids: list[list[int]] | None = None,
        suppress_tokens: list[int] | None = None,
        begin_suppress_tokens: list[int] | None = None,
        generator: torch.Generator | None = None,
        **model_options: Any,
    ) -> torch.Tensor:
        given = dict(min_new_tokens=min_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                     early_stopping=early_stopping, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                     forced_bos_token_id=forced_bos_token_id, forced_eos_token_id=forced_eos_token_id,
                     no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
                     repetition_penalty=repetition_penalty, bad_words_ids=bad_words_ids,
                     suppress_tokens=suppress_tokens, begin_suppress_tokens=begin_suppress_tokens)
        defaults = generation_defaults(self)
        options = {**PLAIN, **{k: v for k, v in defaults.items() if k in given},
                   **{k: v for k, v in given.items() if v is not None}}
        if do_sample and num_beams is None:  # sampling asked for: the default beams give way
            options["num_beams"] = 1
        if min_new_tokens is not None:  # as in transformers, it replaces any min_length
            options["min_length"] = 0
        if max_new_tokens is None:
            longest = defaults.get("max_length") if max_length is None else max_length
            max_new_tokens = MAX_NEW_TOKENS if longest is None else longest - self._start_length(input_ids)
            if max_new_tokens < 1:  # as transformers refuses it
                raise ValueError(f"max_length {longest} leaves no room for new tokens after "
                                 f"{self._start_length(input_ids)} tokens; give max_new_tokens")
        return self._generate(
            input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature, top_k=top_k, top_p=top_p, num_return_sequences=num_return_sequences,
            generator=generator, **options, **model_options)

    def _start_length(self, input_ids: torch.Tensor) -> int:
        """The length of the sequence generation starts from (what ``max_length`` counts)."""
        return input_ids.shape[1]

    def _generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **options: Any):
        raise NotImplementedError(f"{type(self).__name__} does not generate")


def set_generation_defaults(model: torch.nn.Module, record: dict[str, Any]) -> None:
    """Give every generating module of ``model`` (the model, its backbone) a checkpoint's
    generation defaults: a record of :func:`modkit.generation_config.generation_record`."""
    for module in model.modules():
        if isinstance(module, GenerationMixin):
            module.generation_defaults = dict(record)


def generation_defaults(model: torch.nn.Module) -> dict[str, Any]:
    """What ``model.generate`` falls back on: the first generating module's record where it has
    one, else the generation keys its config carries (a backbone built from options: BART's
    forced tokens, the special token ids)."""
    for module in model.modules():
        if isinstance(module, GenerationMixin):
            if module.generation_defaults is not None:
                return dict(module.generation_defaults)
            config = getattr(module, "config", None)
            return generation_record({k: getattr(config, k, None) for k in KEYS}, type(module).__name__)
    return {}


class Seq2SeqGenerationMixin(GenerationMixin):
    """``generate`` for a model with ``encode`` and ``decode_step``: returns decoder sequences
    (B * num_return_sequences, 1 + new) starting with the decoder start token (default: the
    generation defaults', else the config's ``decoder_start_token_id``); ``use_cache=False``
    reruns the decoder on the whole prefix at every step."""

    def _start_length(self, input_ids: torch.Tensor) -> int:
        return 1  # the decoder start token

    def _generate(self, input_ids, attention_mask, *, decoder_start_token_id: int | None = None,
                  use_cache: bool = True, **options):
        if decoder_start_token_id is None:
            decoder_start_token_id = generation_defaults(self).get("decoder_start_token_id")
        start = self.config.decoder_start_token_id if decoder_start_token_id is None else decoder_start_token_id
        return generate_seq2seq(self, input_ids, attention_mask, decoder_start_token_id=start,
                                use_cache=use_cache, **options)
