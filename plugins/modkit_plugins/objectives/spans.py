"""T5's span corruption: the noise mask of t5.data.preprocessors.random_spans_noise_mask (as
transformers' run_t5_mlm_flax.py ports it), drawn with a torch generator."""
from __future__ import annotations

import torch


def span_lengths(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a text of ``length`` tokens, as T5 counts them."""
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    return noise, max(int(round(noise / mean_span)), 1)


def input_and_target_lengths(inputs_length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """T5's compute_input_and_target_lengths: how many raw tokens fill ``inputs_length``
    after corruption (non-noise + one sentinel per span + eos), and the target length."""
    def lengths(tokens: int) -> tuple[int, int]:
        noise = int(round(tokens * noise_density))
        spans = int(round(noise / mean_span))
        return tokens - noise + spans + 1, noise + spans + 1

    tokens = inputs_length
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    _, targets = lengths(tokens)
    if noise_density == 0.5 and targets > inputs_length:
        tokens, targets = tokens - 1, targets - 1
    return tokens, targets


def _segmentation(items: int, segments: int, generator: torch.Generator) -> list[int]:
    """``items`` split into ``segments`` non-empty runs at random: their lengths."""
    cuts = sorted((torch.randperm(items - 1, generator=generator)[: segments - 1] + 1).tolist())
    bounds = [0, *cuts, items]  # in plain Python: a few torch calls per example cost more than the work
    return [b - a for a, b in zip(bounds, bounds[1:])]


def random_spans_noise_mask(length: int, noise_density: float, mean_span: float,
                            generator: torch.Generator) -> list[bool]:
    """Which of ``length`` tokens are noise: non-noise and noise spans alternate, starting
    with non-noise; about ``noise_density`` of the tokens in spans of mean ``mean_span``."""
    noise, spans = span_lengths(length, noise_density, mean_span)
    noise_spans = _segmentation(noise, spans, generator)
    keep_spans = _segmentation(length - noise, spans, generator)
    mask: list[bool] = []
    for keep, drop in zip(keep_spans, noise_spans):
        mask += [False] * keep + [True] * drop
    return mask


def corrupt(tokens: list[int], mask: list[bool], sentinel, eos: int) -> tuple[list[int], list[int]]:
    """(input, target): each noise span replaced by the next sentinel in the input; the target
    is each sentinel followed by its span, closed by the next sentinel and eos."""
    inputs, targets, k = [], [], 0
    for i, (token, noisy) in enumerate(zip(tokens, mask)):
        if noisy:
            if i == 0 or not mask[i - 1]:
                inputs.append(sentinel(k))
                targets.append(sentinel(k))
                k += 1
            targets.append(token)
        else:
            inputs.append(token)
    return inputs + [eos], targets + [sentinel(k), eos]
