"""The repetition penalty, banned words and suppressed tokens, torch and numpy, against
transformers' own logits processors on random scores and sequences (repeats, prompts shorter
than a word, left padding, ids past the scores' vocabulary, the eos as a word)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from modkit.nn.processors import ban_words, penalize_repeats, suppress
from modkit.runtime import processors as numpy_processors

transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as hf  # noqa: E402


def _draw(r: random.Random):
    vocab, rows, length = r.randint(4, 30), r.randint(1, 4), r.randint(1, 8)
    sequences = torch.tensor([[r.randrange(vocab + 2) for _ in range(length)] for _ in range(rows)])
    scores = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(r.randrange(10**6))) * 3
    return vocab, sequences, scores


@pytest.mark.parametrize("seed", range(40))
def test_repetition_penalty_is_transformers(seed):
    r = random.Random(seed)
    vocab, sequences, scores = _draw(r)
    sequences = sequences.clamp(max=vocab + (seed % 2))  # odd seeds: ids past the vocabulary
    penalty = r.choice([0.3, 0.9, 1.2, 2.5])
    skip = torch.tensor([r.randrange(sequences.shape[1]) for _ in range(len(sequences))])
    for ignore in (None, skip):
        theirs = hf.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=ignore)(sequences, scores.clone())
        assert torch.equal(penalize_repeats(sequences, scores, penalty, ignore), theirs)
    theirs = hf.RepetitionPenaltyLogitsProcessor(penalty)(sequences, scores.clone())
    for row in range(len(sequences)):
        mine = scores[row].numpy().copy()
        numpy_processors.penalize_repeats(mine, sequences[row].tolist(), penalty)
        assert np.array_equal(mine, theirs[row].numpy())


@pytest.mark.parametrize("seed", range(40))
def test_banned_words_are_transformers(seed):
    r = random.Random(seed)
    vocab, sequences, scores = _draw(r)
    sequences = sequences.clamp(max=vocab - 1)
    eos = r.randrange(vocab)
    # words of 1-4 tokens; some end the rows (so that they fire), one is the eos alone
    words = [[r.randrange(vocab) for _ in range(r.randint(1, 4))] for _ in range(r.randint(1, 4))]
    row = sequences[r.randrange(len(sequences))].tolist()
    words += [row[-n:] + [r.randrange(vocab)] for n in (1, min(2, len(row)), len(row))] + [[eos]]
    theirs = hf.NoBadWordsLogitsProcessor(words, eos_token_id=eos)(sequences, scores.clone())
    assert torch.equal(ban_words(sequences, scores, words, eos), theirs)
    fired = torch.isinf(theirs) & ~torch.isinf(scores)
    assert fired.any()  # the draw bans something
    for i, sequence in enumerate(sequences.tolist()):
        banned = numpy_processors.banned_words(sequence, tuple(map(tuple, words)), eos)
        assert sorted(set(banned)) == torch.nonzero(fired[i]).flatten().tolist()


def test_banned_words_past_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"bad_words_ids: tokens \[9\] are outside the vocabulary \(5\)"):
        ban_words(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 5), [[1], [2, 9]], None)


@pytest.mark.parametrize("seed", range(10))
def test_suppressed_tokens_are_transformers(seed):
    r = random.Random(seed)
    vocab, sequences, scores = _draw(r)
    tokens = [r.randrange(vocab + 3) for _ in range(r.randint(0, 4))]
    theirs = hf.SuppressTokensLogitsProcessor(tokens)(sequences, scores.clone())
    assert torch.equal(suppress(scores, tokens), theirs)
    mine = scores.numpy().copy()
    mine[:, numpy_processors.suppressed(tuple(tokens), vocab)] = -np.inf
    assert np.array_equal(mine, theirs.numpy())


def test_a_penalty_of_zero_is_refused():
    with pytest.raises(ValueError, match="repetition_penalty must be > 0, got 0"):
        penalize_repeats(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 5), 0)
