"""BERT's token masking, vectorised over a batch: what `mlm` trains on and `modkit preview` shows."""
from __future__ import annotations

import torch

IGNORE = -100  # label of the positions the loss skips


def word_starts(tokenizer, text: str) -> tuple[list[int], list[bool]]:
    """Ids of ``text`` and, per token, whether it begins a word. WordPiece marks continuations
    with ``##`` (as transformers' whole-word collator reads them); other tokenizers continue a
    word when a token follows the previous one with no gap in the text."""
    ids, offsets = tokenizer.encode_with_offsets(text)
    if any(tokenizer.id_to_token(i).startswith("##") for i in ids[:10_000]):
        return ids, [not tokenizer.id_to_token(i).startswith("##") for i in ids]
    return ids, [k == 0 or offsets[k][0] != offsets[k - 1][1] for k in range(len(ids))]


def mask_tokens(ids: torch.Tensor, maskable: torch.Tensor, *, probability: float, mask_rate: float,
                random_rate: float, mask_id: int, random_ids: torch.Tensor, generator: torch.Generator,
                word_start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) as transformers' DataCollatorForLanguageModeling makes them.

    ``maskable`` (B, T) is False at special and padding positions. Each maskable token (each
    word, with ``word_start``) is chosen with ``probability``; a chosen token becomes the mask
    (``mask_rate``), a token drawn from ``random_ids`` (``random_rate``) or stays; labels hold
    the original id at chosen positions and -100 elsewhere.
    """
    draw = torch.rand(ids.shape, generator=generator)
    if word_start is None:
        chosen = (draw < probability) & maskable
    else:  # a word's draw is its first token's: every piece follows it
        start = word_start | ~maskable
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        first = torch.where(start, positions, torch.zeros_like(positions)).cummax(1).values
        chosen = (draw < probability).gather(1, first) & maskable
    how = torch.rand(ids.shape, generator=generator)
    replaced = chosen & (how < mask_rate)
    randomised = chosen & (how >= mask_rate) & (how < mask_rate + random_rate)
    picks = random_ids[torch.randint(len(random_ids), ids.shape, generator=generator)]
    inputs = torch.where(replaced, torch.full_like(ids, mask_id), torch.where(randomised, picks, ids))
    return inputs, torch.where(chosen, ids, torch.full_like(ids, IGNORE))
