"""Beam search against transformers' ``generate`` on many random tiny BART, T5 and GPT-2
models: random depths, widths, vocabularies and weights; an eos the model actually produces
early (so hypotheses end at different steps, some at the first); every length penalty sign,
every ``early_stopping`` mode, 2-5 beams, several returned sequences, padded batches, and
BART's forced first/last tokens. Each case must give the very same token ids."""
from __future__ import annotations

import random

import pytest
import torch

import modkit
from encdec_reference import hf_generate

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

SEEDS = range(12)  # per family: 36 random configurations in all


def _bart(r: random.Random):
    heads = r.choice([1, 2, 4])
    ffn = r.randint(8, 40)
    # transformers' own BART default forces the eos as the last token; bart-large forces a bos first
    forced_eos, forced_bos = (2 if r.random() < 0.4 else None), (0 if r.random() < 0.2 else None)
    config = transformers.BartConfig(
        vocab_size=r.randint(8, 64), d_model=heads * r.choice([4, 8]), encoder_layers=r.randint(1, 2),
        decoder_layers=r.randint(1, 3), encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=32,
        forced_eos_token_id=forced_eos, forced_bos_token_id=forced_bos,
        scale_embedding=r.random() < 0.5, attn_implementation="eager")
    model = transformers.BartForConditionalGeneration(config)
    model.final_logits_bias.normal_()  # so eos and specials are not all equally likely
    return model, dict(pad_token_id=1, decoder_start_token_id=2)


def _t5(r: random.Random):
    layers = r.randint(1, 2)
    config = transformers.T5Config(
        vocab_size=r.randint(8, 64), d_model=r.choice([8, 16]), d_kv=r.choice([4, 8]), d_ff=r.randint(8, 32),
        num_layers=layers, num_decoder_layers=r.choice([layers, layers + 1]), num_heads=r.choice([1, 2, 4]),
        relative_attention_num_buckets=r.choice([4, 8]), relative_attention_max_distance=r.choice([8, 16]),
        feed_forward_proj=r.choice(["relu", "gated-gelu"]), tie_word_embeddings=r.random() < 0.5,
        attn_implementation="eager")
    # the pad id 0 exercises transformers' `pad or eos` fill of finished rows
    return transformers.T5ForConditionalGeneration(config), dict(pad_token_id=0, decoder_start_token_id=0)


def _gpt2(r: random.Random):
    heads = r.choice([1, 2, 4])
    config = transformers.GPT2Config(
        vocab_size=r.randint(8, 64), n_positions=32, n_embd=heads * r.choice([4, 8]), n_layer=r.randint(1, 3),
        n_head=heads, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    return transformers.GPT2LMHeadModel(config), dict(pad_token_id=r.choice([None, 0, 3]))


FAMILIES = {"bart": _bart, "t5": _t5, "gpt2": _gpt2}


def _batch(r: random.Random, vocab: int, *, left: bool):
    """Random ids (B, T) with a mask: right padding for an encoder, left padding for a prompt."""
    lengths = [r.randint(1, 6) for _ in range(r.randint(1, 4))]
    width = max(lengths)
    ids = torch.tensor([[r.randrange(3, vocab) for _ in range(width)] for _ in lengths])
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    if left:
        mask = mask.flip(1)
    return ids.masked_fill(mask == 0, 1), mask


_CASES: dict = {}  # (family, seed) -> case, so the coverage check reuses the models


def _case(family: str, seed: int, folder):
    if (family, seed) not in _CASES:
        _CASES[family, seed] = _draw(family, seed, folder)
    return _CASES[family, seed]


def _draw(family: str, seed: int, tmp_path):
    r = random.Random(f"{family}-{seed}")
    torch.manual_seed(seed)
    hf, ids_args = FAMILIES[family](r)
    hf.eval().save_pretrained(tmp_path, safe_serialization=True)
    ours = modkit.load_model(tmp_path)
    ids, mask = _batch(r, hf.config.vocab_size, left=family == "gpt2")
    # T5 in transformers 5.24 sizes its generation cache by the encoder's depth, so a deeper
    # decoder generates only uncached there
    hf_cache = family != "t5" or hf.config.num_layers == hf.config.num_decoder_layers
    # mostly an eos the model produces in its first steps (for BART, 2 is also its start token)
    greedy = hf_generate(hf, ids, mask, max_new_tokens=3, use_cache=hf_cache, **ids_args)
    new = greedy[:, ids.shape[1] if family == "gpt2" else 1:]
    eos = int(new[r.randrange(new.shape[0]), r.randrange(new.shape[1])]) if r.random() < 0.85 else 2
    num_beams = r.randint(2, 5)
    args = dict(max_new_tokens=r.randint(1, 7), num_beams=num_beams, eos_token_id=eos,
                length_penalty=r.choice([-1.0, 0.0, 0.5, 1.0, 2.0]),
                early_stopping=r.choice([True, False, "never"]),
                num_return_sequences=r.randint(1, num_beams), min_new_tokens=r.choice([0, 0, 1, 2]), **ids_args)
    theirs = hf_generate(hf, ids, mask, use_cache=hf_cache, **args)
    return hf, ours, ids, mask, args, theirs


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")  # min_new_tokens > max is drawn too
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_matches_transformers_on_random_models(family, seed, tmp_path):
    _, ours, ids, mask, args, theirs = _case(family, seed, tmp_path)
    if family == "gpt2":
        mine = ours.generate(ids, attention_mask=mask, **args)
    else:
        mine = ours.generate(ids, mask, use_cache=seed % 2 == 0, **args)
    assert mine.tolist() == theirs.tolist(), args


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")
def test_the_random_cases_reach_the_edges(tmp_path):
    """The draw covers what the search treats specially: hypotheses that end at the first new
    token, every early_stopping mode and length-penalty sign, several returned sequences."""
    seen = {"eos_first": 0, "modes": set(), "penalties": set(), "returns": 0, "forced": 0}
    for family in FAMILIES:
        for seed in SEEDS:
            hf, _, ids, mask, args, out = _case(family, seed, tmp_path / f"{family}{seed}")
            start = ids.shape[1] if family == "gpt2" else 1
            seen["eos_first"] += bool((out[:, start] == args["eos_token_id"]).any())
            seen["modes"].add(args["early_stopping"])
            seen["penalties"].add(args["length_penalty"])
            seen["returns"] += args["num_return_sequences"] > 1
            seen["forced"] += hf.generation_config.forced_eos_token_id is not None
    assert seen["eos_first"] >= 3 and seen["returns"] >= 10 and seen["forced"] >= 2, seen
    assert seen["modes"] == {True, False, "never"} and len(seen["penalties"]) == 5, seen
