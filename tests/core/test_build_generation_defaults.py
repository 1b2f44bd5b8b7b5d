"""An artifact built from a Hugging Face checkpoint carries the checkpoint's generation defaults
in its manifest: `modkit run` (torch-free), the artifact's torch model and `modkit export-hf`
all keep them, and give transformers' tokens; options given on the command line win."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import modkit
from modkit.cli import main
from modkit.runtime import Runtime
from modkit.runtime.artifact import read_manifest
from specs import build_from_checkpoint

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: bart-large-cnn's kind of settings (beams, n-gram ban, length penalty, min length), its forced
#: bos and eos, a repetition penalty, banned words and suppressed tokens (the tokenizer's ids, set below)
SETTINGS = dict(no_repeat_ngram_size=2, num_beams=3, length_penalty=2.0, min_length=3, max_length=10,
                repetition_penalty=1.5)
NEW = 7


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf-bart-defaults")
    rows = (EXAMPLES / "tiny-t5" / "data" / "train.jsonl").read_text().splitlines()[:40]
    (tmp / "train.jsonl").write_text("\n".join(rows) + "\n")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(json.loads(r)["target"] for r in rows))
    comp = modkit.get_registry().get("tokenizer", "bpe")
    tok = comp.load().train([corpus], comp.options(vocab_size=200, special_tokens={
        "bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}))
    bos, pad, eos = (tok.special_id(r) for r in ("bos", "pad", "eos"))
    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=tok.vocab_size, d_model=16, encoder_layers=1, decoder_layers=2,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32, max_position_embeddings=64, bos_token_id=bos,
                                     pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=eos)
    hf = transformers.BartForConditionalGeneration(config)
    hf.final_logits_bias.normal_()
    unk = tok.special_id("unk")
    settings = dict(SETTINGS, forced_bos_token_id=bos, forced_eos_token_id=eos, eos_token_id=eos, pad_token_id=pad,
                    decoder_start_token_id=eos, suppress_tokens=[unk], begin_suppress_tokens=[pad],
                    bad_words_ids=[[unk, bos], [pad]])
    for key, value in settings.items():
        setattr(hf.generation_config, key, value)
    hf.save_pretrained(tmp / "hf", safe_serialization=True)
    tok.save(tmp / "hf" / "tokenizer.json")
    build_from_checkpoint(tmp, tmp / "hf", '{ use = "seq2seq", max_new_tokens = 4 }', "train.jsonl", 32)
    texts = [json.loads(r)["source"] for r in rows[:4]]
    return tmp, tok, hf.eval(), texts, settings


def _before_eos(row: list[int], eos: int) -> list[int]:
    return row[:row.index(eos)] if eos in row else row


def _hf_tokens(hf, tok, text, **options):
    eos = tok.special_id("eos")
    ids = torch.tensor([tok.encode(text) + [eos]])
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **{"max_new_tokens": NEW, **options})
    return _before_eos(out[0, 1:].tolist(), eos)


def test_the_manifest_records_the_checkpoints_generation_defaults(built):
    tmp, *_, settings = built
    record = read_manifest(tmp / "out")["generation"]
    assert {k: record.get(k) for k in settings} == settings


def test_run_applies_them_and_explicit_options_win(built):
    tmp, tok, hf, texts, _ = built
    runtime = Runtime(tmp / "out")
    assert [r["ids"] for r in runtime.run(texts, max_new_tokens=NEW)] == [_hf_tokens(hf, tok, t) for t in texts]
    given = dict(num_beams=1, no_repeat_ngram_size=0)
    expected = [_hf_tokens(hf, tok, t, **given) for t in texts]
    assert [r["ids"] for r in runtime.run(texts, max_new_tokens=NEW, **given)] == expected
    assert expected != [_hf_tokens(hf, tok, t) for t in texts]  # the defaults do change the tokens here
    r = CliRunner().invoke(main, ["run", str(tmp / "out"), "--text", texts[0], "--max-new-tokens", str(NEW),
                                  "--num-beams", "1", "-O", "no_repeat_ngram_size=0", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["ids"] == expected[0]
    # no length given: the checkpoint's max_length (decoder start included), not the build's 4
    unbounded = [_hf_tokens(hf, tok, t, max_new_tokens=None) for t in texts]
    assert [r["ids"] for r in runtime.run(texts)] == unbounded and max(map(len, unbounded)) > 4


def test_the_repetition_penalty_is_a_run_option(built):
    tmp, tok, hf, texts, _ = built
    runtime, out = Runtime(tmp / "out"), str(tmp / "out")
    greedy = dict(num_beams=1, no_repeat_ngram_size=0)
    # this random BART repeats no token unless rewarded for it (a penalty below 1)
    expected = {p: [_hf_tokens(hf, tok, t, repetition_penalty=p, **greedy) for t in texts] for p in (1.0, 0.2)}
    for penalty, tokens in expected.items():
        assert [r["ids"] for r in runtime.run(texts, max_new_tokens=NEW, repetition_penalty=penalty, **greedy)] == tokens
    assert expected[1.0] != expected[0.2]
    r = CliRunner().invoke(main, ["run", out, "--text", texts[0], "--max-new-tokens", str(NEW), "--num-beams", "1",
                                  "-O", "no_repeat_ngram_size=0", "-O", "repetition_penalty=0.2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["ids"] == expected[0.2][0]
    r = CliRunner().invoke(main, ["run", out, "--text", texts[0], "-O", "repetition_penalty=0"])
    assert r.exit_code == 2
    assert "options for task 'seq2seq': repetition_penalty: Input should be greater than 0" in r.output


def test_the_artifacts_torch_model_applies_them(built):
    tmp, tok, hf, texts, _ = built
    model, eos = modkit.load_model(tmp / "out").backbone, tok.special_id("eos")
    for text in texts:
        ids = torch.tensor([tok.encode(text) + [eos]])
        row = model.generate(ids, torch.ones_like(ids), max_new_tokens=NEW)[0, 1:].tolist()
        assert _before_eos(row, eos) == _hf_tokens(hf, tok, text)


def test_export_hf_writes_them_for_transformers(built):
    tmp, *_, settings = built
    r = CliRunner().invoke(main, ["export-hf", str(tmp / "out"), str(tmp / "back")])
    assert r.exit_code == 0, r.output
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp / "back").generation_config
    assert {k: getattr(back, k) for k in settings} == settings


@pytest.fixture(scope="module")
def built_gpt2(tmp_path_factory):
    """A random GPT-2 whose generation config counts max_length over the prompt, built as is."""
    tmp = tmp_path_factory.mktemp("hf-gpt2-defaults")
    corpus = tmp / "corpus.txt"
    rows = (EXAMPLES / "tiny-t5" / "data" / "train.jsonl").read_text().splitlines()[:40]
    corpus.write_text("\n".join(json.loads(r)["target"] for r in rows))
    comp = modkit.get_registry().get("tokenizer", "bpe")
    tok = comp.load().train([corpus], comp.options(vocab_size=300, style="byte-level"))
    eos = tok.special_id("eos")
    torch.manual_seed(1)
    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=eos, eos_token_id=eos)
    hf = transformers.GPT2LMHeadModel(config)
    settings = dict(no_repeat_ngram_size=1, num_beams=2, max_length=28, min_length=20, forced_eos_token_id=eos)
    hf.generation_config.update(**settings)
    hf.save_pretrained(tmp / "hf", safe_serialization=True)
    tok.save(tmp / "hf" / "tokenizer.json")
    build_from_checkpoint(tmp, tmp / "hf", '{ use = "clm" }', "corpus.txt", 32)
    texts = [" ".join(json.loads(r)["source"].split()[:words]) for words, r in zip((1, 3, 2, 3, 1), rows)]
    return tmp, tok, hf.eval(), texts


def test_run_of_a_language_model_counts_max_length_over_each_prompt(built_gpt2):
    tmp, tok, hf, texts = built_gpt2
    eos, model = tok.special_id("eos"), modkit.load_model(tmp / "out").backbone
    expected = []
    for text in texts:
        ids = torch.tensor([tok.encode(text)])
        assert ids.shape[1] < 28  # prompts of several lengths, each with room under max_length
        with torch.no_grad():
            theirs = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids))[0, ids.shape[1]:].tolist()
        assert model.generate(ids, torch.ones_like(ids))[0, ids.shape[1]:].tolist() == theirs
        expected.append(_before_eos(theirs, eos))
    assert len({len(tok.encode(t)) for t in texts}) > 1
    assert [r["ids"] for r in Runtime(tmp / "out").run(texts)] == expected
    given = [r["ids"] for r in Runtime(tmp / "out").run(texts, max_new_tokens=3, num_beams=1)]
    assert all(len(ids) <= 3 for ids in given) and given != expected
