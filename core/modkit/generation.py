"""Token-by-token decoding shared by every generating model (decoder-only or encoder-decoder).

A model takes part through a *step function*: ``step(tokens, cache) -> (logits, cache)``
where ``tokens`` (B, T) are the tokens not yet seen by the cache (the whole prompt on the
first call, with ``cache=None``), and ``logits`` (B, V) are for the position after the last
of them. The step function owns masks and positions, so this module knows nothing of
architectures.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

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
) -> torch.Tensor:
    """Greedy or sampled decoding. Returns the new tokens (B, <= max_new_tokens).

    Rows that produced ``eos_token_id`` are padded with ``pad_token_id`` (default: the eos)
    afterwards; decoding stops early once every row has.
    """
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    logits, cache = step(prompt, None)
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    out = []
    for i in range(max_new_tokens):
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
