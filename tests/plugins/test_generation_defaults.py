"""A checkpoint's generation defaults against transformers: random tiny BART, T5 and GPT-2
checkpoints whose generation config sets forced first/last tokens, no_repeat_ngram_size,
beams, length penalty, early stopping, min_length, an eos the model produces, and a repetition
penalty, banned words and suppressed tokens among those it produces. transformers'
``generate`` given nothing but ``max_new_tokens``, modkit's torch ``generate`` likewise, and the
torch-free runtime over the exported ONNX graphs must give the very same tokens; an option the
caller gives overrides the defaults in all three. Some checkpoints keep the settings in
config.json without a generation_config.json (as published checkpoints written before that file
existed do), which transformers reads then too."""
from __future__ import annotations

import json
import random

import pytest
import torch

import modkit
from modkit.nn.generation import generation_defaults
from modkit.runtime import make_session
from modkit.runtime.decoders import CachedLM, CachedSeq2Seq
from modkit.runtime.generation import GenerationOptions, decode

transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
transformers.logging.set_verbosity_error()
from test_beam_search_random import FAMILIES, _batch  # noqa: E402 - the random tiny models

SEEDS = range(5)  # per family
#: the processors the draw sets, and the value that turns each off
PROCESSORS = dict(repetition_penalty=1.0, bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None)
#: options given explicitly, which must win over the checkpoint's defaults
OVERRIDE = dict(num_beams=1, no_repeat_ngram_size=0, min_new_tokens=1, repetition_penalty=1.25)


def _settings(r: random.Random, hf, eos: int) -> dict:
    vocab, beams = hf.config.vocab_size, r.choice([1, 1, 2, 3, 4])
    # transformers refuses to save beam settings without beams
    beam = dict(length_penalty=r.choice([-1.0, 0.5, 1.0, 2.0]), early_stopping=r.choice([True, False, "never"]))
    return dict(eos_token_id=eos, no_repeat_ngram_size=r.choice([0, 1, 2, 2, 3]), num_beams=beams,
                min_length=r.choice([0, 0, 2, 4]), forced_bos_token_id=r.choice([None, None, r.randrange(vocab)]),
                forced_eos_token_id=r.choice([None, eos, eos]),
                **(beam if beams > 1 else dict(length_penalty=None, early_stopping=None)))


def _processors(r: random.Random, probe, start: int, settings: dict) -> dict:
    """Each of repetition_penalty, bad_words_ids, suppress_tokens, begin_suppress_tokens set in
    about half the draws, in transformers' order, each with tokens the model emits under the
    settings drawn before it (``probe(**extra)``: prefixes and new tokens, new from ``start``), so
    that they change its output. transformers refuses to suppress a forced token; the eos stays
    allowed so that rows still stop (but for the banned word [eos], which transformers drops)."""
    eos = settings["eos_token_id"]
    spared = {eos, settings["forced_bos_token_id"], settings["forced_eos_token_id"]}
    drawn = dict(repetition_penalty=r.choice([None, None, 0.5, 0.8, 1.3, 2.0]))

    def rows():  # each row before its eos, under the settings drawn so far
        out = probe(**{k: v for k, v in drawn.items() if v is not None}).tolist()
        return [row[:start + row[start:].index(eos)] if eos in row[start:] else row for row in out]

    # words of 1-3 tokens that end among the new tokens (the first may be the prompt's last)
    words = sorted({tuple(row[j:j + n]) for row in rows() for n in (1, 2, 3)
                    for j in range(max(0, start + 1 - n), len(row) - n + 1)})
    picked = [list(w) for w in r.sample(words, min(len(words), r.randint(1, 3)))]
    drawn["bad_words_ids"] = r.choice([None, picked, picked + [[eos]]]) or None
    emitted = sorted({t for row in rows() for t in row[start:]} - spared)
    drawn["suppress_tokens"] = r.choice([None, r.sample(emitted, min(len(emitted), r.randint(1, 2)))]) or None
    # the first new token, or the second after a forced first one (as transformers' begin_index)
    begin = start + (start == 1 and settings["forced_bos_token_id"] is not None)
    early = sorted({row[begin] for row in rows() if len(row) > begin} - spared)
    drawn["begin_suppress_tokens"] = r.choice([None, r.sample(early, min(len(early), r.randint(1, 2)))]) or None
    return drawn


def _save(hf, settings: dict, folder, legacy: bool) -> None:
    """Save with the settings in generation_config.json, or (``legacy``) in config.json only."""
    for key, value in settings.items():
        setattr(hf.generation_config, key, value)
    hf.save_pretrained(folder, safe_serialization=True)
    if legacy:
        config = json.loads((folder / "config.json").read_text())
        config.update({k: v for k, v in settings.items() if v is not None})
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "generation_config.json").unlink()


_CASES: dict = {}


def _case(family: str, seed: int, folder):
    if (family, seed) not in _CASES:
        _CASES[family, seed] = _draw(family, seed, folder)
    return _CASES[family, seed]


def _draw(family: str, seed: int, folder):
    r = random.Random(f"defaults-{family}-{seed}")
    torch.manual_seed(seed)
    hf, ids_args = FAMILIES[family](r)
    ids, mask = _batch(r, hf.config.vocab_size, left=family == "gpt2")
    # T5 in transformers 5.24 sizes its cache by the encoder's depth: a deeper decoder runs uncached
    hf_cache = family != "t5" or hf.config.num_layers == hf.config.num_decoder_layers
    with torch.no_grad():
        first = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, use_cache=hf_cache,
                            do_sample=False, num_beams=1, **ids_args)
    new = first[:, ids.shape[1] if family == "gpt2" else 1:]
    eos = int(new[r.randrange(new.shape[0]), r.randrange(new.shape[1])])  # a token the model does emit
    settings = {**_settings(r, hf, eos), **ids_args}
    if r.random() < 0.5:  # the longest sequence, counting the (padded) prompt or the decoder start
        settings["max_length"] = (ids.shape[1] if family == "gpt2" else 1) + r.randint(1, 9)
    legacy, max_new_tokens = r.random() < 0.3, r.randint(2, 8)
    for key, value in settings.items():
        setattr(hf.generation_config, key, value)

    def probe(**extra):
        with torch.no_grad():
            return hf.eval().generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      use_cache=hf_cache, **extra)

    # from a random stream of their own, so that adding them left the other draws as they were
    settings.update(_processors(random.Random(f"processors-{family}-{seed}"), probe,
                                ids.shape[1] if family == "gpt2" else 1, settings))
    _save(hf, settings, folder, legacy)
    reloaded = type(hf).from_pretrained(folder, attn_implementation="eager").eval()
    return dict(family=family, hf=reloaded, ours=modkit.load_model(folder), ids=ids, mask=mask, settings=settings,
                legacy=legacy, max_new_tokens=max_new_tokens, hf_cache=hf_cache, folder=folder)


def _hf(case, ids, mask, **options):
    with torch.no_grad():
        return case["hf"].generate(input_ids=ids, attention_mask=mask, max_new_tokens=case["max_new_tokens"],
                                   use_cache=case["hf_cache"], **options)


def _new_before_eos(case, out: torch.Tensor, prompt_width: int) -> list[int]:
    eos = case["settings"]["eos_token_id"]
    row = out[0, prompt_width if case["family"] == "gpt2" else 1:].tolist()
    return row[:row.index(eos)] if eos in row else row


def _runtime(case, options: GenerationOptions) -> list[list[int]]:
    """The runtime's tokens for every row of the case's batch, decoded together over ONNX."""
    from modkit.builder.export.cached import export_with_past
    from modkit.builder.export.seq2seq import export_graphs

    ours, ids, mask = case["ours"], case["ids"], case["mask"]
    folder = case["folder"] / "onnx"  # exported once per case
    folder.mkdir(exist_ok=True)
    defaults = generation_defaults(ours)
    rows = [ids[i][mask[i] == 1].tolist() for i in range(len(ids))]
    if case["family"] == "gpt2":
        graph = folder / "model_with_past.onnx"
        if not graph.exists():
            export_with_past(ours.backbone, folder)
        decoder, prefixes = CachedLM(make_session(graph, "cpu"), rows, pad_id=1), rows
    else:
        if not (folder / "decoder.onnx").exists():
            export_graphs(ours, folder, ids, mask)
        start = defaults["decoder_start_token_id"]
        decoder = CachedSeq2Seq(make_session(folder / "encoder.onnx", "cpu"), make_session(folder / "decoder.onnx", "cpu"),
                                ids.numpy(), mask.numpy(), start)
        prefixes = [[start]] * len(rows)
    return decode(decoder, len(rows), options, max_new_tokens=case["max_new_tokens"],
                  eos_token_id=defaults.get("eos_token_id"), prefixes=prefixes, defaults=defaults)


def _mine(case, **options):
    if case["family"] == "gpt2":
        return case["ours"].generate(case["ids"], attention_mask=case["mask"], max_new_tokens=case["max_new_tokens"],
                                     **options)
    return case["ours"].generate(case["ids"], case["mask"], max_new_tokens=case["max_new_tokens"], **options)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_generate_takes_the_checkpoints_defaults_as_transformers_does(family, seed, tmp_path):
    case = _case(family, seed, tmp_path)
    ids, mask = case["ids"], case["mask"]
    assert _mine(case).tolist() == _hf(case, ids, mask).tolist(), case["settings"]
    assert _mine(case, **OVERRIDE).tolist() == _hf(case, ids, mask, **OVERRIDE).tolist(), case["settings"]
    # no option at all: max_length where the checkpoint sets one, else 20 new tokens
    with torch.no_grad():
        theirs = case["hf"].generate(input_ids=ids, attention_mask=mask, use_cache=case["hf_cache"])
    mine = case["ours"].generate(ids, attention_mask=mask)
    assert mine.tolist() == theirs.tolist(), case["settings"]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_runtime_takes_the_checkpoints_defaults_as_transformers_does(family, seed, tmp_path):
    """Each row of the runtime's batch gets transformers' tokens for that text alone."""
    case = _case(family, seed, tmp_path)
    ids, mask = case["ids"], case["mask"]
    for options, given in ((GenerationOptions(), {}), (GenerationOptions(**OVERRIDE), OVERRIDE)):
        expected = []
        for i in range(len(ids)):
            alone = ids[i][mask[i] == 1][None]
            expected.append(_new_before_eos(case, _hf(case, alone, torch.ones_like(alone), **given), alone.shape[1]))
        assert _runtime(case, options) == expected, (case["settings"], given)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_random_cases_reach_the_edges(tmp_path):
    """The draw covers each default, both files, rows that stop at their eos and rows that run to
    max_new_tokens, and n-gram bans, repetition penalties, banned words and suppressed tokens that
    change the tokens."""
    seen = {"legacy": 0, "max_length": 0, "ngram_changes": 0, "beams": 0, "forced_bos": 0, "forced_eos": 0, "min_length": 0,
            "stopped_early": 0, "ran_to_max": 0, **{f"{key}_changes": 0 for key in PROCESSORS}}
    for family in FAMILIES:
        for seed in SEEDS:
            case = _case(family, seed, tmp_path / f"{family}{seed}")
            s, ids, mask = case["settings"], case["ids"], case["mask"]
            seen["legacy"] += case["legacy"]
            seen["max_length"] += "max_length" in s
            seen["beams"] += s["num_beams"] > 1
            seen["forced_bos"] += s["forced_bos_token_id"] is not None
            seen["forced_eos"] += s["forced_eos_token_id"] is not None
            seen["min_length"] += s["min_length"] > 0
            if s["no_repeat_ngram_size"]:
                seen["ngram_changes"] += not torch.equal(_hf(case, ids, mask), _hf(case, ids, mask, no_repeat_ngram_size=0))
            for key, off in PROCESSORS.items():  # None given to transformers 5's generate turns a key off
                if s[key] is not None:
                    seen[f"{key}_changes"] += not torch.equal(_hf(case, ids, mask), _hf(case, ids, mask, **{key: off}))
            new = _hf(case, ids, mask)[:, ids.shape[1] if family == "gpt2" else 1:]
            stopped = (new == s["eos_token_id"]).any(1)
            seen["stopped_early"] += bool((stopped & (new.shape[1] < case["max_new_tokens"])).any()) or bool(
                (new[:, :-1] == s["eos_token_id"]).any())
            seen["ran_to_max"] += bool((~stopped).any()) and new.shape[1] == case["max_new_tokens"]
    assert all(v >= 2 for v in seen.values()), str(seen)
    assert seen["ngram_changes"] >= 3, seen



@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_takes_the_defaults_but_no_beams(family, tmp_path):
    """Asked to sample, both decode without the checkpoint's beams, with its n-gram ban, minimum
    length and forced tokens: the runtime gives a text torch's tokens for the same seed."""
    for seed in SEEDS:
        case = _case(family, seed, tmp_path / str(seed))
        ids, mask = case["ids"][:1], case["mask"][:1]
        alone = ids[mask == 1][None]
        torch_case = {**case, "ids": alone, "mask": torch.ones_like(alone)}
        mine = _mine(torch_case, do_sample=True, generator=torch.Generator().manual_seed(seed))
        got = _runtime(torch_case, GenerationOptions(do_sample=True, seed=seed))
        assert got == [_new_before_eos(case, mine, alone.shape[1])], case["settings"]


def test_a_max_length_the_prompt_fills_is_refused(tmp_path):
    case = _case("gpt2", 0, tmp_path)
    width = case["ids"].shape[1]
    with pytest.raises(ValueError, match=f"max_length {width} leaves no room for new tokens after {width}"):
        case["ours"].generate(case["ids"], max_length=width)
