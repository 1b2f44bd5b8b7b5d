"""Beam search and cache reordering on toy step functions (transformers parity is in the
BART/T5 tests)."""
import itertools

import torch

from modkit.nn.generation import beam_search, generate, reorder_cache


def toy_step(table: torch.Tensor):
    """A step function whose next-token logits depend on the last token only: table[last]."""
    def step(tokens, cache):
        return table[tokens[:, -1]], None
    return step


def test_reorder_cache_selects_rows_through_any_nesting():
    k = torch.arange(6.0).view(3, 2)
    cache = [((k, k + 10), None), {"cross": (k * 2,)}]
    out = reorder_cache(cache, torch.tensor([2, 2, 0]))
    assert torch.equal(out[0][0][1], torch.tensor([[14.0, 15.0], [14.0, 15.0], [10.0, 11.0]]))
    assert out[0][1] is None and isinstance(out[0], tuple)
    assert torch.equal(out[1]["cross"][0], k[[2, 2, 0]] * 2)


def test_one_beam_is_greedy():
    table = torch.randn(7, 7, generator=torch.Generator().manual_seed(0))
    prompt = torch.tensor([[0], [3]])
    greedy = generate(toy_step(table), prompt, max_new_tokens=6)
    assert torch.equal(beam_search(toy_step(table), prompt, num_beams=1, max_new_tokens=6), greedy)


def test_wide_beam_finds_the_best_sequence_exhaustively():
    vocab, eos, steps = 4, 3, 3
    table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(1)) * 2
    logp = table.log_softmax(-1)
    best, best_score = None, -float("inf")
    for seq in itertools.product(range(vocab), repeat=steps):
        if eos in seq:
            seq = seq[:seq.index(eos) + 1]
        score = sum(logp[a, b] for a, b in zip((0,) + seq, seq))
        if score > best_score:
            best, best_score = seq, score
    # length_penalty 0 and "never" make it the textbook search; 16 beams hold every prefix
    found = beam_search(toy_step(table), torch.zeros(16, 1, dtype=torch.long), num_beams=16,
                        max_new_tokens=steps, eos_token_id=eos, length_penalty=0.0,
                        early_stopping="never")
    assert found[0].tolist()[:len(best)] == list(best)
