"""`classify` in GPT's input formats (single, pair, similarity, choice) on GPT and BERT:
the rows each format builds, training, ONNX parity, and served output equal to torch."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import modkit
from modkit.builder.assembly import load_torch_model
from modkit.errors import UserError
from modkit.runtime import Runtime, softmax
from modkit_plugins.objectives.formats import Layout

SPECIALS = {"eos": "<|endoftext|>", "pad": "<|pad|>", "unk": "<|unk|>", "bos": "<|start|>", "sep": "<|delim|>",
            "cls": "<|extract|>"}  # GPT's start, delimiter and extract tokens as bos, sep and cls
GPT_SPECIALS = "{ " + ", ".join(f'{k} = "{v}"' for k, v in SPECIALS.items()) + " }"


def sentences(paragraphs) -> list[str]:
    text = " ".join(" ".join(p.split()) for p in paragraphs)
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if 20 < len(s) < 160]


def records(fmt: str, paragraphs, n: int = 24) -> list[dict]:
    """Real sentences: pair/similarity ask whether text_pair follows text; choice picks the
    next sentence among 3."""
    s = sentences(paragraphs)
    out = []
    for i in range(n):
        nxt, other = s[i + 1], s[(i * 7 + 13) % len(s)]
        if fmt == "single":
            out.append({"text": s[i], "label": "ab"[i % 2]})
        elif fmt in ("pair", "similarity"):
            out.append({"text": s[i], "text_pair": nxt if i % 2 else other, "label": ["no", "yes"][i % 2]})
        else:
            choices = [other, s[(i * 11 + 5) % len(s)]]
            choices.insert(i % 3, nxt)
            out.append({"text": s[i], "choices": choices, "label": i % 3})
    return out


def write_spec(folder, fmt, paragraphs, *, family="gpt", steps=30, aux=0.0):
    rows = records(fmt, paragraphs)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "corpus.txt").write_text("\n\n".join(paragraphs[:60]))
    labels = {"single": '["a", "b"]', "pair": '["no", "yes"]', "similarity": '["no", "yes"]'}.get(fmt)
    objective = f'{{ use = "classify", format = "{fmt}"' + (f", labels = {labels}" if labels else "") + \
        f", aux_lm_weight = {aux}, holdout = 0.25 }}"
    tokenizer = (f'use = "bpe"\nvocab_size = 400\nspecial_tokens = {GPT_SPECIALS}' if family == "gpt"
                 else 'use = "wordpiece"\nvocab_size = 400')
    (folder / "spec.toml").write_text(f"""
name = "formats"
seed = 1
[tokenizer]
{tokenizer}
train_on = ["corpus.txt"]
[backbone]
use = "{family}"
d_model = 32
n_layers = 2
n_heads = 2
n_positions = 128
[[stages]]
objective = {objective}
data = "data.jsonl"
steps = {steps}
batch_size = 8
seq_len = 64
lr = 3e-3
""")
    return folder / "spec.toml", rows


def build(folder, *args, **kw):
    spec, rows = write_spec(folder, *args, **kw)
    modkit.build(spec, folder / "out", progress=False, echo=lambda _: None)
    return folder / "out", rows


def torch_probabilities(out, rows):
    """What the torch model says, inputs made by the same layout the runtime uses."""
    model = load_torch_model(out).eval()
    task = json.loads((out / "manifest.json").read_text())["task"]
    layout, tokenizer = Layout.from_task(task), modkit.load_tokenizer(out)
    arrays = layout.arrays([layout.rows(tokenizer, r["text"], r.get("text_pair"), r.get("choices")) for r in rows],
                           task["pad_token_id"])
    extra = {"token_type_ids": torch.from_numpy(arrays["token_type_ids"])} if task["use_template"] else {}
    with torch.no_grad():
        logits = model(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"]), **extra).logits
    return softmax(logits.double().numpy())


@pytest.fixture(scope="module")
def gpt_tokenizer(tmp_path_factory, paragraphs):
    from modkit_plugins.tokenizers.bpe import BPEOptions
    from modkit_plugins.tokenizers.bpe_model import BPETokenizer

    path = tmp_path_factory.mktemp("tok") / "corpus.txt"
    path.write_text("\n\n".join(paragraphs[:60]))
    return BPETokenizer.train([path], BPEOptions(vocab_size=400, special_tokens=SPECIALS))


def test_gpt_layout_frames_texts_with_start_delimiter_extract(gpt_tokenizer):
    tok = gpt_tokenizer
    start, delim, extract = (tok.special_id(r) for r in ("bos", "sep", "cls"))
    a, b, c = tok.encode("the socket"), tok.encode("module provides"), tok.encode("access")
    pair = Layout("pair", start=(start,), delimiter=(delim,), extract=(extract,))
    assert pair.rows(tok, "the socket", "module provides") == [([start, *a, delim, *b, extract], [0] * (len(a) + len(b) + 3))]
    sim = Layout("similarity", start=(start,), delimiter=(delim,), extract=(extract,))
    assert [r[0] for r in sim.rows(tok, "the socket", "module provides")] == \
        [[start, *a, delim, *b, extract], [start, *b, delim, *a, extract]]
    choice = Layout("choice", start=(start,), delimiter=(delim,), extract=(extract,))
    assert [r[0] for r in choice.rows(tok, "the socket", choices=["module provides", "access"])] == \
        [[start, *a, delim, *b, extract], [start, *a, delim, *c, extract]]
    cut = Layout("pair", start=(start,), delimiter=(delim,), extract=(extract,), max_length=6)
    ids = cut.rows(tok, "the socket module provides access to the interface", "module provides")[0][0]
    assert len(ids) == 6 and ids[0] == start and ids[-1] == extract and delim in ids
    arrays = choice.arrays([choice.rows(tok, "x", choices=["a", "b c d"])] * 3, 0)
    assert arrays["input_ids"].shape[:2] == (3, 2) and arrays["attention_mask"].shape == arrays["input_ids"].shape


def test_encoder_layout_is_the_tokenizers_pair_template(tmp_path, paragraphs):
    from modkit_plugins.tokenizers.wordpiece import WordPieceOptions
    from modkit_plugins.tokenizers.wordpiece_model import WordPieceTokenizer

    (tmp_path / "c.txt").write_text("\n".join(paragraphs[:40]))
    tok = WordPieceTokenizer.train([tmp_path / "c.txt"], WordPieceOptions(vocab_size=300))
    layout = Layout("pair", use_template=True, max_length=12)
    a, b = "The socket module provides access to the BSD socket interface.", "It is available on all systems."
    enc = tok.encode_plus(a, b, max_length=12)
    assert layout.rows(tok, a, b) == [(enc.ids, enc.type_ids)]
    assert Layout("single", use_template=True).rows(tok, a) == [(tok.encode_plus(a).ids, tok.encode_plus(a).type_ids)]


@pytest.mark.parametrize("fmt", ["single", "pair", "similarity", "choice"])
def test_gpt_format_trains_exports_and_serves_what_torch_computes(tmp_path, paragraphs, fmt):
    out, rows = build(tmp_path, fmt, paragraphs, aux=0.5 if fmt == "choice" else 0.0)
    m = json.loads((out / "manifest.json").read_text())
    stage = m["stages"][0]
    assert stage["loss_last_10"] < stage["loss_first_10"]
    assert m["parity"]["max_abs_diff"] < 1e-4 and m["task"]["format"] == fmt
    assert "heldout_accuracy" in stage["eval"]
    if fmt == "choice":
        assert m["parity"]["inputs"]["input_ids"][1] == 3 and stage["eval"]["chance_baseline"] == pytest.approx(1 / 3)
    served = Runtime(out).run(rows)
    expected = torch_probabilities(out, rows)
    if fmt == "choice":
        assert [r["label"] for r in served] == expected.argmax(-1).tolist()
        assert [r["choice"] for r in served] == [r["choices"][k] for r, k in zip(rows, expected.argmax(-1))]
        np.testing.assert_allclose([r["probabilities"] for r in served], expected, atol=1e-5)
    else:
        labels = m["task"]["labels"]
        assert [r["label"] for r in served] == [labels[k] for k in expected.argmax(-1)]
        np.testing.assert_allclose([list(r["probabilities"].values()) for r in served], expected, atol=1e-5)


def test_choice_serves_records_with_different_numbers_of_choices(tmp_path, paragraphs):
    out, rows = build(tmp_path, "choice", paragraphs, steps=4)
    mixed = [rows[0], {"text": rows[1]["text"], "choices": rows[1]["choices"][:2]},
             {"text": rows[2]["text"], "choices": rows[2]["choices"] + ["one more answer"]}]
    served = Runtime(out).run(mixed)
    assert [len(r["probabilities"]) for r in served] == [3, 2, 4]
    for record, result in zip(mixed, served):
        np.testing.assert_allclose(result["probabilities"], torch_probabilities(out, [record])[0], atol=1e-5)


@pytest.mark.parametrize("fmt", ["pair", "choice"])
def test_bert_pairs_go_through_the_template_with_segment_ids(tmp_path, paragraphs, fmt):
    out, rows = build(tmp_path, fmt, paragraphs, family="bert")
    m = json.loads((out / "manifest.json").read_text())
    assert m["task"]["use_template"] and "token_type_ids" in m["parity"]["inputs"]
    runtime = Runtime(out)
    assert "token_type_ids" in [i.name for i in runtime.session("model.onnx").get_inputs()]
    served = runtime.run(rows)
    got = [r["probabilities"] if fmt == "choice" else list(r["probabilities"].values()) for r in served]
    np.testing.assert_allclose(got, torch_probabilities(out, rows), atol=1e-5)


def test_preview_shows_each_choice(tmp_path, paragraphs):
    spec, rows = write_spec(tmp_path, "choice", paragraphs)
    record = next(modkit.preview(spec, n=1))
    assert len(record["input_ids"]) == 3 and len(record["choice_ids"]) == 3
    assert isinstance(record["labels"], int) and len(record["choice_texts"]) == 3
    assert all(t.strip() for t in record["choice_texts"])
    assert record["input_text"][record["labels"]].endswith("<|extract|>")


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("choices"), "data.jsonl:3: missing field 'choices'"),
    (lambda r: r.update(label=3), "data.jsonl:3: label 3 is not a choice"),
    (lambda r: r.update(choices="one text"), "data.jsonl:3: 'choices' must be a list"),
    (lambda r: r["choices"].pop(), "data.jsonl:3: 2 choices, but the file's first record has 3"),
])
def test_bad_choice_data_names_file_and_line(tmp_path, paragraphs, change, message):
    spec, rows = write_spec(tmp_path, "choice", paragraphs, steps=1)
    change(rows[2])
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=re.escape(message)):
        modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)


def test_choice_takes_no_labels_and_pair_needs_them(tmp_path):
    from modkit_plugins.objectives.classify import ClassifyOptions

    with pytest.raises(ValueError, match="takes no labels"):
        ClassifyOptions(format="choice", labels=["a", "b"])
    with pytest.raises(ValueError, match="needs labels"):
        ClassifyOptions(format="pair")


def test_modkit_serve_takes_choices_as_a_list(tmp_path, paragraphs):
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from modkit.serve.app import create_app

    out, rows = build(tmp_path, "choice", paragraphs, steps=2)
    runtime = Runtime(out)
    inputs = [{"text": r["text"], "choices": r["choices"]} for r in rows[:3]]
    with TestClient(create_app(runtime)) as client:
        got = client.post("/v1/run", json={"inputs": inputs})
        assert got.status_code == 200, got.text
        assert [g["label"] for g in got.json()["results"]] == [e["label"] for e in runtime.run(inputs)]
        bad = client.post("/v1/run", json={"inputs": [{"text": "a", "choices": ["b", 3]}]})
        assert bad.status_code == 422 and "inputs[0].choices: expected a string or a list of strings" in bad.text
        bad = client.post("/v1/run", json={"inputs": [{"text": ["a"], "choices": ["b"]}]})
        assert bad.status_code == 422 and "inputs[0].text: expected a string" in bad.text


@pytest.mark.parametrize("fmt", ["similarity", "choice"])
def test_auxiliary_lm_loss_covers_every_row_of_a_group(tmp_path, paragraphs, gpt_tokenizer, fmt):
    from modkit_plugins.backbones.gpt import GPTOptions
    from modkit_plugins.backbones.gpt_model import GPT
    from modkit_plugins.objectives.classify import ClassifyOptions
    from modkit_plugins.objectives.classify_impl import Classify
    from modkit.nn.losses import lm_loss

    rows = records(fmt, paragraphs)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    backbone = GPT(GPTOptions(vocab_size=gpt_tokenizer.vocab_size, d_model=16, n_layers=1, n_heads=2, n_positions=128))
    labels = None if fmt == "choice" else ["no", "yes"]
    objective = Classify(ClassifyOptions(format=fmt, labels=labels, aux_lm_weight=0.5, dropout=0.0), backbone, gpt_tokenizer)
    batch = objective.reader.batch(objective.reader.load_data(tmp_path / "d.jsonl", 64), 4, torch.Generator().manual_seed(0))
    backbone.eval()  # no dropout: the two passes below must see the same states
    loss, figures = objective.head.loss(backbone, batch)
    figures = {k: float(v) for k, v in figures.items()}
    ids, mask = batch["input_ids"].flatten(0, 1), batch["attention_mask"].flatten(0, 1)
    expected = lm_loss(backbone, backbone(ids, mask).last_hidden_state, ids, mask)
    assert figures["lm_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(figures["cls_loss"] + 0.5 * figures["lm_loss"], rel=1e-5)
