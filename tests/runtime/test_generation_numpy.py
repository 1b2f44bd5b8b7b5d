"""The torch-free decoding (modkit.runtime.generation) against modkit's torch decoding, on toy
models whose next-token logits are a table lookup of the last token, with random tables."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modkit.nn.generation import beam_search as torch_beam_search
from modkit.nn.generation import filter_logits as torch_filter_logits
from modkit.nn.generation import generate as torch_generate
from modkit.runtime.generation import Sampling, TorchGenerator, beam_search, filter_logits, generate


class TableDecoder:
    """A Decoder whose logits are table[last token]; it records the batch sizes it ran."""

    def __init__(self, table: np.ndarray, prompts: list[int]):
        self.table, self.last, self.sizes = table, np.array(prompts), []

    def start(self):
        self.sizes.append(len(self.last))
        return self.table[self.last]

    def step(self, tokens):
        assert len(tokens) == len(self.last)
        self.last = np.asarray(tokens)
        return self.start()

    def select(self, rows):
        self.last = self.last[rows]


def torch_step(table: torch.Tensor):
    return lambda tokens, cache: (table[tokens[:, -1]], None)


def random_table(seed: int, vocab: int, eos: int | None = None, eos_boost: float = 0.0) -> np.ndarray:
    table = np.random.default_rng(seed).normal(size=(vocab, vocab)).astype(np.float32) * 3
    if eos is not None:
        table[:, eos] += eos_boost
    return table


def torch_rows(new: torch.Tensor, eos: int | None) -> list[list[int]]:
    rows = new.tolist()
    return [r[:r.index(eos)] if eos in r else r for r in rows]


def test_torch_generator_stream_is_torch_s():
    for seed in (0, 1, 12345, 2**32 - 1):
        g = torch.Generator().manual_seed(seed)
        theirs = torch.empty(9, dtype=torch.float64).uniform_(generator=g).numpy()
        assert np.array_equal(TorchGenerator(seed).uniform(9), theirs)
        g = torch.Generator().manual_seed(seed)
        theirs = torch.empty(60_000, dtype=torch.float32).exponential_(1, generator=g).numpy()
        np.testing.assert_allclose(TorchGenerator(seed).exponential(60_000), theirs, rtol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_filter_logits_matches_torch(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3, 40)).astype(np.float32) * 2
    top_k, top_p = int(rng.integers(0, 10)), float(rng.uniform(0.2, 1.0))
    ours = filter_logits(logits, top_k=top_k, top_p=top_p)
    theirs = torch_filter_logits(torch.from_numpy(logits), top_k=top_k, top_p=top_p).numpy()
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    assert np.array_equal(ours[~np.isinf(ours)], theirs[~np.isinf(theirs)])


@pytest.mark.parametrize("seed", range(5))
def test_greedy_batch_with_per_row_stopping_matches_torch(seed):
    vocab, eos = 30, 2
    table = random_table(seed, vocab, eos, eos_boost=2.5)
    prompts = list(np.random.default_rng(seed).integers(3, vocab, size=6))
    decoder = TableDecoder(table, prompts)
    ours = generate(decoder, len(prompts), max_new_tokens=12, eos_token_id=eos)
    theirs = torch_generate(torch_step(torch.from_numpy(table)), torch.tensor(prompts)[:, None],
                            max_new_tokens=12, eos_token_id=eos)
    assert ours == torch_rows(theirs, eos)
    # rows left the batch as they finished (the table makes some stop early)
    assert decoder.sizes[0] == 6 and decoder.sizes[-1] < 6


@pytest.mark.parametrize("seed", range(5))
def test_sampling_gives_torch_s_tokens_for_the_same_seed(seed):
    """Each row sampled as torch samples that prompt alone with torch.Generator().manual_seed."""
    rng = np.random.default_rng(100 + seed)
    vocab, eos = 50, 1
    table = random_table(seed, vocab, eos, eos_boost=1.0)
    sampling = Sampling(temperature=float(rng.uniform(0.5, 1.5)), top_k=int(rng.integers(0, 20)),
                        top_p=float(rng.uniform(0.5, 1.0)))
    prompts = list(rng.integers(2, vocab, size=4))
    seeds = [int(s) for s in rng.integers(0, 2**32, size=4)]
    ours = generate(TableDecoder(table, prompts), 4, max_new_tokens=15, eos_token_id=eos,
                    sampling=sampling, seeds=seeds)
    for prompt, seed_, got in zip(prompts, seeds, ours):
        theirs = torch_generate(torch_step(torch.from_numpy(table)), torch.tensor([[prompt]]), max_new_tokens=15,
                                do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k,
                                top_p=sampling.top_p, eos_token_id=eos,
                                generator=torch.Generator().manual_seed(seed_))
        assert got == torch_rows(theirs, eos)[0]


@pytest.mark.parametrize("seed, num_beams, length_penalty, early_stopping", [
    (0, 2, 1.0, False), (1, 3, 0.5, True), (2, 4, 2.0, "never"), (3, 5, 1.0, False), (4, 1, 1.0, False)])
def test_beam_search_matches_torch(seed, num_beams, length_penalty, early_stopping):
    vocab, eos = 12, 3
    table = random_table(seed, vocab, eos, eos_boost=1.5)
    prompts = list(np.random.default_rng(seed).integers(4, vocab, size=3))
    ours = beam_search(TableDecoder(table, prompts), 3, num_beams=num_beams, max_new_tokens=9,
                       eos_token_id=eos, length_penalty=length_penalty, early_stopping=early_stopping)
    theirs = torch_beam_search(torch_step(torch.from_numpy(table)),
                               torch.tensor(prompts).repeat_interleave(num_beams)[:, None], num_beams=num_beams,
                               max_new_tokens=9, eos_token_id=eos, length_penalty=length_penalty,
                               early_stopping=early_stopping)
    assert ours == torch_rows(theirs, eos)
