"""Builds beyond GPT: an encoder-decoder (seq2seq ONNX pair) and a Hugging Face start."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import modkit
from modkit.runtime.artifact import read_manifest
from modkit.cli import main
from modkit.runtime import Runtime
from specs import assert_transformers_loads_quietly

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def quiet_build(spec, out):
    return modkit.build(spec, out, progress=False, echo=lambda _: None)


@pytest.mark.parametrize("family, extra, opset", [
    ("t5", 'd_kv = 8\nfeed_forward_proj = "gated-gelu"\ntie_embeddings = false', 17),
    ("bart", "n_positions = 64", 18),
])
def test_seq2seq_build_exports_a_cached_pair_that_generates_like_torch(tmp_path, family, extra, opset):
    rows = (EXAMPLES / "tiny-t5" / "data" / "train.jsonl").read_text().splitlines()[:120]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "corpus.txt").write_text("\n".join(json.loads(r)["target"] for r in rows))
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''
name = "s2s"
[tokenizer]
use = "bpe"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
use = "{family}"
d_model = 32
encoder_layers = 2
decoder_layers = 1
n_heads = 2
d_ff = 64
{extra}
[[stages]]
objective = {{ use = "seq2seq", max_new_tokens = 8, eval_examples = 4 }}
data = "train.jsonl"
steps = 20
batch_size = 8
seq_len = 24
[export]
opset = {opset}
''')
    quiet_build(spec, tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    assert {"encoder.onnx", "decoder.onnx"} <= set(m["files"])
    import onnx

    for graph in ("encoder.onnx", "decoder.onnx"):  # [export] opset is honoured for encoder-decoders too
        imports = onnx.load(str(tmp_path / "out" / graph), load_external_data=False).opset_import
        assert [o.version for o in imports if o.domain in ("", "ai.onnx")] == [opset]
    assert m["parity"]["greedy_tokens_equal"] and m["parity"]["max_abs_diff"] < 1e-4
    tok = modkit.load_tokenizer(tmp_path / "out")
    opts = m["components"]["backbone"]["options"]
    assert (opts["pad_token_id"], opts["eos_token_id"]) == (tok.special_id("pad"), tok.special_id("eos"))
    texts = [json.loads(r)["source"] for r in rows[:3]]
    served = Runtime(tmp_path / "out").run(texts, max_new_tokens=8)
    model = modkit.load_model(tmp_path / "out").backbone
    for text, result in zip(texts, served):
        ids = torch.tensor([tok.encode(text)[:23] + [m["task"]["eos_token_id"]]])
        out = model.generate(ids, torch.ones_like(ids), max_new_tokens=8, eos_token_id=m["task"]["eos_token_id"],
                             decoder_start_token_id=m["task"]["decoder_start_token_id"])[0, 1:].tolist()
        expected = out[: out.index(m["task"]["eos_token_id"])] if m["task"]["eos_token_id"] in out else out
        assert result["ids"] == expected


@pytest.fixture
def tiny_hf_bert(tmp_path, corpus_path):
    """A random BERT saved by transformers, with a modkit-trained WordPiece tokenizer beside it."""
    transformers = pytest.importorskip("transformers")
    comp = modkit.get_registry().get("tokenizer", "wordpiece")
    tok = comp.load().train([corpus_path], comp.options(vocab_size=400))
    folder = tmp_path / "hf-bert"
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    tok.save(folder / "tokenizer.json")
    return folder


def test_lora_fine_tune_from_a_hugging_face_checkpoint(tmp_path, tiny_hf_bert):
    transformers = pytest.importorskip("transformers")
    rows = (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines()[:80]
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''
name = "hf-bert-lora"
[backbone]
from = "{tiny_hf_bert.name}"
[[stages]]
objective = {{ use = "classify", labels = ["argparse", "datetime", "socket", "sqlite3", "unittest"] }}
peft = [{{ use = "lora", r = 2, targets = ["attn.q", "attn.v"] }}]
data = "data.jsonl"
steps = 6
batch_size = 4
seq_len = 32
''')
    quiet_build(spec, tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    assert m["components"]["backbone"]["name"] == "bert" and m["components"]["tokenizer"]["name"] == "wordpiece"
    assert m["parity"]["max_abs_diff"] < 1e-4
    texts = [json.loads(r)["text"] for r in rows[::9]]
    model, tok = modkit.load_model(tmp_path / "out"), modkit.load_tokenizer(tmp_path / "out")
    labels = m["task"]["labels"]
    torch_labels = []
    for text in texts:
        ids = torch.tensor([tok.encode_plus(text, max_length=32).ids])
        torch_labels.append(labels[int(model(ids, torch.ones_like(ids)).logits.argmax())])
    assert [r["label"] for r in Runtime(tmp_path / "out").run(texts)] == torch_labels

    # the merged weights go back out, with the classifier and its labels, as a folder that
    # transformers' AutoModelForSequenceClassification loads and that computes modkit's logits
    r = CliRunner().invoke(main, ["export-hf", str(tmp_path / "out"), str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    assert type(hf).__name__ == "BertForSequenceClassification"
    assert_transformers_loads_quietly(tmp_path / "back")
    assert [hf.config.id2label[i] for i in range(len(labels))] == labels
    batch = tok.batch_encode(texts, max_length=32)
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    with torch.no_grad():
        ours = model(ids, mask).logits
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    assert (ours - theirs).abs().max() < 1e-5
