"""`modkit probe-data` and `modkit probe` on tiny random models (an encoder and a decoder) and a
hand-annotated CoNLL-U slice; the attention statistics on attention maps with known answers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from modkit.builder.hf.convert import save_hf
from modkit.cli import main
from modkit_plugins.analysis.probe_heads import HeadStats
from modkit_plugins.analysis.probe_inputs import Sentence

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONLLU = FIXTURES / "probe-mini.conllu"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    result = invoke("probe-data", str(CONLLU), "-o", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_conllu_becomes_pos_deps_and_trees(tasks):
    pos = [json.loads(line) for line in (tasks / "pos.jsonl").read_text().splitlines()]
    deps = [json.loads(line) for line in (tasks / "deps.jsonl").read_text().splitlines()]
    trees = [json.loads(line) for line in (tasks / "trees.jsonl").read_text().splitlines()]
    assert len(pos) == len(deps) == len(trees) == 12
    assert pos[0]["text"] == "The cat sat on the mat ."
    assert [t["label"] for t in pos[0]["targets"]] == ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]
    # "cat" (word 1) is the nsubj of "sat" (word 2); the root has no target
    assert {"span1": [1, 2], "span2": [2, 3], "label": "nsubj"} in deps[0]["targets"]
    assert len(deps[0]["targets"]) == 6
    # the multi-word token "can't" is left out, its words ca + n't kept
    assert trees[-1] == {"words": ["I", "ca", "n't", "swim", "."], "heads": [4, 4, 4, 0, 4],
                         "deprels": ["nsubj", "aux", "advmod", "root", "punct"]}


def test_tagged_and_csv_sources(tmp_path):
    (tmp_path / "t.txt").write_text("Pierre/NNP Vinken/NNP ./. It/PRP works/VBZ ./.\nOK/UH\n")
    (tmp_path / "u.csv").write_text('"1","This may be true ."\n"-1","It is true ."\n')
    assert invoke("probe-data", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o")).exit_code == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "pos.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["Pierre Vinken .", "It works .", "OK"]
    assert invoke("probe-data", str(tmp_path / "u.csv"), "--name", "hedge", "-o", str(tmp_path / "o")).exit_code == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "hedge.jsonl").read_text().splitlines()]
    assert rows[0]["targets"] == [{"span1": [0, 5], "label": "1"}]


@pytest.mark.parametrize("text, message", [
    ("1\tThe\tthe\tDET\n", "expected 10 tab-separated"),
    ("1\tA\ta\tDET\tDT\t_\tx\tdet\t_\t_\n", "ID and HEAD must be integers"),
    ("2\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n", "not 1..n"),
])
def test_bad_conllu_names_file_and_line(tmp_path, text, message):
    bad = tmp_path / "bad.conllu"
    bad.write_text(text)
    result = invoke("probe-data", str(bad), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and f"{bad}:1" in result.output and message in result.output


def _tiny_checkpoint(kind: str, folder: Path, corpus_path: Path) -> Path:
    """A random tiny model and a tokenizer trained on the fixture text, as a Hugging Face folder."""
    import modkit

    reg = modkit.get_registry()
    torch.manual_seed(0)
    if kind == "bert":
        tok_comp, bb = reg.get("tokenizer", "wordpiece"), reg.get("backbone", "bert")
        tok = tok_comp.load().train([corpus_path], tok_comp.options(vocab_size=300))
        model = bb.load()(bb.options(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                                     n_positions=64))
    else:
        tok_comp, bb = reg.get("tokenizer", "bpe"), reg.get("backbone", "gpt")
        tok = tok_comp.load().train([corpus_path], tok_comp.options(style="byte-level", vocab_size=400))
        model = bb.load()(bb.options(vocab_size=tok.vocab_size, d_model=32, n_layers=3, n_heads=2, n_positions=64))
    return save_hf(model.eval(), folder / kind, tokenizer=tok)


@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_probe_report_on_a_tiny_random_model(kind, tasks, tmp_path, corpus_path):
    ckpt = _tiny_checkpoint(kind, tmp_path, corpus_path)
    out = tmp_path / "report"
    args = ["probe", str(ckpt), str(tasks), "-o", str(out), "--task", "pos", "--task", "deps", "--epochs", "2",
            "--min-relation-count", "5", "--quiet"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    n_layers = report["layers"]
    assert n_layers == (2 if kind == "bert" else 3)
    for name in ("pos", "deps"):
        t = report["tasks"][name]
        weights = t["mix"]["weights"]
        assert len(weights) == n_layers + 1 and sum(weights) == pytest.approx(1, abs=1e-5)
        assert t["centre_of_gravity"] == pytest.approx(sum(i * w for i, w in enumerate(weights)))
        scores = [c["accuracy"] for c in t["cumulative"]]
        assert len(scores) == n_layers + 1 and all(0 <= s <= 1 for s in scores)
        assert t["delta"] == pytest.approx([b - a for a, b in zip(scores, scores[1:])])
        if sum(t["delta"]) > 0:
            assert t["expected_layer"] == pytest.approx(sum(i * d for i, d in enumerate(t["delta"], 1)) / sum(t["delta"]))
        assert t["mix"]["accuracy"] == scores[-1]
    assert report["tasks"]["deps"]["two_spans"] and not report["tasks"]["pos"]["two_spans"]
    a = report["attention"]
    heads = 4 if kind == "bert" else 2
    for key in ("entropy", "uniform_entropy", "cls", "sep", "punctuation", "previous", "next"):
        assert np.array(a[key]).shape == (n_layers, heads)
    assert (np.array(a["entropy"]) <= np.array(a["uniform_entropy"]) + 1e-6).all()
    if kind == "bert":
        assert (np.array(a["cls"]) > 0).all() and (np.array(a["sep"]) > 0).all()
    else:  # GPT-2 puts no special tokens around a text
        assert not np.array(a["cls"]).any() and not np.array(a["sep"]).any()
    assert {"det", "nsubj", "punct"} <= set(a["relations"])
    det = a["relations"]["det"]
    assert det["count"] == 14 and det["baseline"]["offset"] == 1  # a determiner's head is mostly the next word
    assert det["baseline"]["accuracy"] == pytest.approx(8 / 14)
    assert 0 <= det["best_head"]["accuracy"] <= 1 and 1 <= det["best_head"]["layer"] <= n_layers
    markdown = (out / "report.md").read_text()
    # matplotlib is in the dev extras: the figures are part of what is tested
    for png in ("layers_pos.png", "layers_deps.png", "heads.png", "relations.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in markdown
    # the activations are cached: a second run reuses them
    again = CliRunner().invoke(main, args[:-1])
    assert again.exit_code == 0 and "reusing" in again.stderr


def test_probe_learns_a_lexical_task(tmp_path, corpus_path):
    """Whether a word is 'the' is in the embeddings: the layer-0 probe must get it right."""
    words = "the cat saw the dog near the old tree and a bird".split()
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(120):
        sent = list(rng.choice(words, size=8))
        rows.append({"text": " ".join(sent), "targets": [{"span1": [i, i + 1], "label": str(w == "the")}
                                                         for i, w in enumerate(sent)]})
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "isthe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt = _tiny_checkpoint("bert", tmp_path, corpus_path)
    result = invoke("probe", str(ckpt), str(tmp_path / "t"), "-o", str(tmp_path / "r"), "--epochs", "6",
                    "--pooling", "mean", "--quiet")
    assert result.exit_code == 0, result.output
    t = json.loads((tmp_path / "r" / "report.json").read_text())["tasks"]["isthe"]
    assert t["cumulative"][0]["accuracy"] > max(0.95, t["majority_baseline"])


def test_head_statistics_on_known_attention():
    """Token i attends only to token i-1 (token 0 to itself): previous = 1, entropy 0; a tree
    whose heads are the previous words is found by that head with accuracy 1."""
    t = 5
    attn = np.zeros((1, 2, t, t))
    for i in range(t):
        attn[0, 0, i, max(i - 1, 0)] = 1
    attn[0, 1] = 1 / t  # the second head is uniform
    s = Sentence(["a", "b", "c", "d", "e"], ids=list(range(t)), word_tokens=[(i, i + 1) for i in range(t)],
                 specials={})
    stats = HeadStats(1, 2, causal=False)
    stats.add(attn, s, punct_tokens=[4])
    stats.add_tree(attn, s, heads=[0, 1, 2, 3, 4], deprels=["root", "x", "x", "x", "x"])
    out = stats.summary(min_count=1)
    assert out["previous"][0] == pytest.approx([1.0, 1 / t])
    assert out["entropy"][0] == pytest.approx([0.0, math.log(t)])
    assert out["uniform_entropy"][0][0] == pytest.approx(math.log(t))
    assert out["punctuation"][0] == pytest.approx([0.0, 1 / t])
    rel = out["relations"]["x"]
    assert rel["count"] == 4 and rel["best_head"] == {"layer": 1, "head": 1, "direction": "dependent->head",
                                                      "accuracy": 1.0}
    assert rel["baseline"] == {"offset": -1, "accuracy": 1.0}


def test_unknown_task_is_a_user_error(tasks, tmp_path, corpus_path):
    ckpt = _tiny_checkpoint("bert", tmp_path, corpus_path)
    result = invoke("probe", str(ckpt), str(tasks), "-o", str(tmp_path / "r"), "--task", "ner")
    assert result.exit_code == 2 and "no task ner" in result.output
