"""`modkit run` in batches: every generating mode gives the tokens of modkit's torch generation."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import modkit
from modkit.cli import main
from modkit.nn.generation import beam_search
from modkit.runtime import Runtime, batches_by_size

PROMPTS = ["import the", "a", "The socket module provides a", "", "def", "Return the number of bytes"]


def gpt_step(backbone, prompt_ids):
    """A torch step function over one unpadded prompt (as the build's parity check runs it)."""
    def step(tokens, cache):
        seen = 0 if cache is None else cache[0][0][0].shape[2]
        mask = torch.ones((tokens.shape[0], seen + tokens.shape[1]), dtype=torch.long)
        out = backbone(tokens, mask, past_key_values=cache, use_cache=True)
        return backbone.lm_logits(out.last_hidden_state[:, -1]), out.past_key_values
    return step


def torch_new_tokens(row: list[int], eos: int | None) -> list[int]:
    return row[:row.index(eos)] if eos in row else row


@pytest.fixture(scope="module")
def gpt(gpt_artifact):
    model = modkit.load_model(gpt_artifact).backbone.eval()
    runtime = Runtime(gpt_artifact)
    eos = runtime.task.get("eos_token_id")
    prompts = [runtime.tokenizer.encode(t) or [eos] for t in PROMPTS]
    return runtime, model, eos, prompts


@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_greedy_batches_give_torch_s_left_padded_batch(gpt, batch_size):
    runtime, model, eos, prompts = gpt
    got = [r["ids"] for r in runtime.run(PROMPTS, batch_size=batch_size, max_new_tokens=12)]
    width = max(map(len, prompts))  # torch's generate over one left-padded batch
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(ids, mask, max_new_tokens=12, eos_token_id=eos)[:, width:]
    assert got == [torch_new_tokens(r, eos) for r in out.tolist()]


@pytest.mark.parametrize("seed", [0, 7, 2**31 + 5])
def test_sampling_gives_torch_s_tokens_for_each_text_with_the_seed(gpt, seed):
    runtime, model, eos, prompts = gpt
    options = dict(temperature=0.9, top_k=40, top_p=0.95, seed=seed, max_new_tokens=10)
    got = [r["ids"] for r in runtime.run(PROMPTS, batch_size=3, **options)]
    for prompt, ids in zip(prompts, got):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=True, temperature=0.9,
                             top_k=40, top_p=0.95, eos_token_id=eos,
                             generator=torch.Generator().manual_seed(seed))[0, len(prompt):]
        assert ids == torch_new_tokens(out.tolist(), eos)
    # a text's tokens do not depend on its batch
    assert [r["ids"] for r in runtime.run(PROMPTS[::-1], batch_size=1, **options)] == got[::-1]


@pytest.mark.parametrize("num_beams", [2, 4])
def test_beam_search_gives_torch_s_beams(gpt, num_beams):
    runtime, model, eos, prompts = gpt
    got = [r["ids"] for r in runtime.run(PROMPTS, batch_size=4, num_beams=num_beams, max_new_tokens=8)]
    with torch.no_grad():
        for prompt, ids in zip(prompts, got):
            start = torch.tensor([prompt]).repeat_interleave(num_beams, 0)
            out = beam_search(gpt_step(model, prompt), start, num_beams=num_beams, max_new_tokens=8,
                              eos_token_id=eos)[0]
            assert ids == torch_new_tokens(out.tolist(), eos)


def test_seq2seq_batches_greedy_and_beam_give_torch_s_tokens(seq2seq_artifact):
    runtime = Runtime(seq2seq_artifact)
    model = modkit.load_model(seq2seq_artifact).backbone.eval()
    task = runtime.task
    eos, start = task["eos_token_id"], task["decoder_start_token_id"]
    texts = ["it is not a daemon thread", "remove extra newlines", "the event loop", "x", "return a list of"]
    for mode in ({}, {"num_beams": 3}):
        got = [r["ids"] for r in runtime.run(texts, batch_size=2, max_new_tokens=8, **mode)]
        for text, ids in zip(texts, got):
            src = torch.tensor([runtime.tokenizer.encode(text) + [eos]])
            out = model.generate(src, torch.ones_like(src), max_new_tokens=8, eos_token_id=eos,
                                 decoder_start_token_id=start, **mode)[0, 1:]
            assert ids == torch_new_tokens(out.tolist(), eos), mode


def test_sampling_and_beams_are_validated(gpt_artifact):
    runtime = Runtime(gpt_artifact)
    with pytest.raises(modkit.UserError, match="beam search does not sample"):
        runtime.run(["a"], num_beams=2, temperature=0.5)
    with pytest.raises(modkit.UserError, match="top_p"):
        runtime.run(["a"], top_p=1.5)
    with pytest.raises(modkit.UserError, match="batch size"):
        runtime.run(["a"], batch_size=0)


def test_run_file_in_batches_keeps_input_order_and_reports_stats(classifier_artifact, tmp_path):
    rows = [{"text": "socket " * n, "label": "socket"} for n in (9, 1, 5, 3, 7, 2)]
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    one = CliRunner().invoke(main, ["run", str(classifier_artifact), "--file", str(data), "--json",
                                    "--batch-size", "1"])
    batched = CliRunner().invoke(main, ["run", str(classifier_artifact), "--file", str(data), "--json",
                                        "--batch-size", "4", "--stats"])
    assert one.exit_code == 0 and batched.exit_code == 0, batched.output
    lines = [json.loads(x) for x in batched.stdout.splitlines()]
    assert [x["text"] for x in lines] == [r["text"] for r in rows]
    for a, b in zip(one.stdout.splitlines(), lines):  # padding in a batch changes nothing
        a = json.loads(a)
        assert a["label"] == b["label"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    assert "texts/s" in batched.stderr and "input tokens/s" in batched.stderr


def test_run_generation_stats_and_options_through_the_cli(gpt_artifact):
    r = CliRunner().invoke(main, ["run", str(gpt_artifact), "--text", "import", "--text", "the socket",
                                  "--temperature", "0.7", "--seed", "3", "--max-new-tokens", "5", "--stats", "--json"])
    assert r.exit_code == 0, r.output
    again = CliRunner().invoke(main, ["run", str(gpt_artifact), "--text", "import", "--text", "the socket",
                                      "--temperature", "0.7", "--seed", "3", "--max-new-tokens", "5", "--json"])
    assert r.stdout == again.stdout  # a seed makes sampling reproducible
    assert "generated tokens/s" in r.stderr
    bad = CliRunner().invoke(main, ["run", str(gpt_artifact), "--text", "a", "--num-beams", "2", "--sample"])
    assert bad.exit_code == 2 and "beam search does not sample" in bad.stderr


#: a value per run option that `modkit run` also takes as a flag, and the flag's words
FLAGGED = {"max_new_tokens": ("3", ["--max-new-tokens", "3"]), "temperature": ("0.5", ["--temperature", "0.5"]),
           "top_k": ("5", ["--top-k", "5"]), "top_p": ("0.9", ["--top-p", "0.9"]), "seed": ("7", ["--seed", "7"]),
           "num_beams": ("2", ["--num-beams", "2"]), "do_sample": ("true", ["--sample"])}


def test_every_flagged_option_may_be_given_with_O_too(gpt_artifact):
    flagged = {p.name for p in main.commands["run"].params} & set(Runtime(gpt_artifact).task_component.options.model_fields)
    assert flagged == set(FLAGGED)  # a new flag gets a case here
    for key, (value, flag) in FLAGGED.items():
        # sampled runs are seeded, so both ways must give the very same tokens
        common = ["run", str(gpt_artifact), "--text", "import the", "--json",
                  *(["--sample"] if key == "seed" else [] if key == "num_beams" else ["--seed", "1"])]
        by_flag = CliRunner().invoke(main, common + flag)
        by_option = CliRunner().invoke(main, common + ["-O", f"{key}={value}"])
        assert by_flag.exit_code == 0 and by_option.exit_code == 0, (key, by_option.output)
        assert by_option.stdout == by_flag.stdout, key
    r = CliRunner().invoke(main, ["run", str(gpt_artifact), "--text", "hi", "--temperature", "0.5", "-O",
                                  "temperature=0.7"])
    assert r.exit_code == 2 and r.output == "error: temperature is given twice: --temperature and -O temperature=0.7\n"
    same = CliRunner().invoke(main, ["run", str(gpt_artifact), "--text", "hi", "--max-new-tokens", "2", "-O",
                                     "max_new_tokens=2"])
    assert same.exit_code == 0, same.output
    r = CliRunner().invoke(main, ["run", str(gpt_artifact), "--text", "hi", "-O", "batch_size=3"])
    assert r.exit_code == 2 and r.output == (
        "error: generate takes no option 'batch_size'; it takes: do_sample, temperature, top_k, top_p, seed, "
        "num_beams, length_penalty, early_stopping, no_repeat_ngram_size, repetition_penalty, min_new_tokens, "
        "max_new_tokens\n")


def test_generation_and_the_server_import_no_torch(gpt_artifact):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from modkit.runtime import Runtime
import modkit.serve.app
rt = Runtime({str(gpt_artifact)!r})
rt.run(["import the", "a"], num_beams=2, max_new_tokens=3)
rt.run(["import the", "a"], temperature=0.7, seed=1, max_new_tokens=3)
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("seed", range(5))
def test_batches_by_size_cover_every_input_once_and_pad_within_the_bound(seed):
    rng = random.Random(seed)
    sizes = [rng.randint(1, 400) for _ in range(rng.randint(1, 120))]
    batch_size, max_padding = rng.choice([1, 4, 8, 32]), rng.choice([0.0, 0.25, 1.0])
    batches = batches_by_size(sizes, batch_size, max_padding)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    longest_before = 0
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        lengths = [sizes[i] for i in batch]
        assert lengths == sorted(lengths) and lengths[0] >= longest_before  # like sizes together
        longest_before = lengths[-1]
        if len(batch) > 1:  # a batch of one cannot pad
            assert lengths[-1] * len(lengths) <= (1 + max_padding) * sum(lengths)


def test_a_cpu_runtime_cuts_batches_where_padding_would_double_the_work(gpt):
    """Ten short prompts and one long: the long one runs alone, the short ones together."""
    runtime = gpt[0]
    sizes = [3] * 10 + [300]
    assert batches_by_size(sizes, 32, runtime.max_padding) == [list(range(10)), [10]]
    assert batches_by_size(sizes, 32, 100.0) == [list(range(11))]
