"""A T5 built from the `t5-small` preset (shrunk) without naming its tokenizer: the preset brings
t5-spiece, a SentencePiece Unigram trained as T5's was. Span-corruption pretraining finds its
sentinels, fine-tuning follows, the ONNX artifact is served without torch, and transformers'
T5TokenizerFast loads the tokenizer (the artifact's tokenizer.json, and export-hf's folder) with
the same ids on multilingual text."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import import_or_skip

import modkit
from modkit.builder.build import build
from modkit.builder.preview import preview

SPEC = """
name = "tiny-t5-preset"
[tokenizer]                # no `use`: the t5-small preset brings t5-spiece
vocab_size = 500
extra_ids = 20
train_on = "c.txt"
[backbone]
use = "t5-small"
vocab_size = 0             # the tokenizer's 500 (its sentinels included), not the preset's 32,128
d_model = 32
d_kv = 8
d_ff = 64
encoder_layers = 1
decoder_layers = 1
n_heads = 4
extra_ids = 20
[[stages]]
objective = { use = "span-corruption", max_new_tokens = 12 }
data = "c.txt"
steps = 30
batch_size = 8
seq_len = 32
lr = 3e-3
[[stages]]
objective = { use = "seq2seq", max_new_tokens = 12 }
data = "pairs.jsonl"
steps = 10
batch_size = 8
seq_len = 32
lr = 3e-3
"""
#: held in the training text too, so that some of their characters become pieces
MULTILINGUAL = [
    "Größere Übungen für Ärzte, naïve café à la carte.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "東京は日本の首都です。機械学習とトークナイザー。",
    "مرحبا بالعالم، هذه جملة عربية.",
    "emoji 🙂🚀 and ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ１２３",
]
HELD_BACK = ["Fill <extra_id_0> in and <extra_id_7>.</s>", "  spaced   out\ttabs  ", "ünïcödé 中文 Кириллица ✓",
             "Χαίρετε, κόσμε!", "a\u200bzero width", "</s> at the start, <extra_id_19> last sentinel"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, corpus_path):
    folder = tmp_path_factory.mktemp("t5preset")
    text = corpus_path.read_text(encoding="utf-8")[:40_000]
    (folder / "c.txt").write_text(text + "\n" + "\n".join(MULTILINGUAL * 20) + "\n", encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if len(line.split()) > 4][:200]
    (folder / "pairs.jsonl").write_text("".join(json.dumps({"source": line.lower().rstrip("."), "target": line}) + "\n"
                                                for line in lines), encoding="utf-8")
    (folder / "spec.toml").write_text(SPEC)
    manifest = build(folder / "spec.toml", folder / "out", progress=False, echo=lambda m: None)
    return folder, manifest


def test_the_preset_brought_t5s_tokenizer_into_the_artifact(artifact):
    folder, manifest = artifact
    assert manifest["spec"]["tokenizer"]["use"] == "t5-spiece"
    assert manifest["spec"]["tokenizer"]["model_type"] == "unigram"
    assert manifest["components"]["tokenizer"]["name"] == "sentencepiece"
    assert manifest["components"]["backbone"]["options"]["vocab_size"] == 500
    tok = modkit.load_tokenizer(folder / "out")
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    assert tok.token_to_id("<extra_id_0>") == 499 and tok.token_to_id("<extra_id_19>") == 480


def test_span_corruption_finds_the_sentinels(artifact):
    folder, manifest = artifact
    tok = modkit.load_tokenizer(folder / "out")
    sentinels = {tok.token_to_id(f"<extra_id_{k}>") for k in range(20)}
    records = list(preview(folder / "spec.toml", stage=0, n=4))
    for record in records:
        assert record["labels"][0] == tok.token_to_id("<extra_id_0>") and record["labels"][-1] == 1  # ... </s>
        assert sentinels & set(record["input_ids"]) and "<extra_id_0>" in record["input_text"]
    report = manifest["stages"][0]
    assert report["loss_last_10"] < report["loss_first_10"] - 0.5


def test_the_fine_tuned_artifact_is_served_without_torch(artifact):
    folder, manifest = artifact
    assert manifest["task"]["task"] == "seq2seq" and manifest["stages"][1]["loss_last_10"] > 0
    code = """
import json, sys
class Block:
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from modkit.runtime import Runtime
print(json.dumps(Runtime(sys.argv[1]).run(["the module provides functions", "東京は日本の首都です"])))
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code, str(folder / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == 2 and all(isinstance(r["generated"], str) for r in results)


def texts(paragraphs) -> list[str]:
    return paragraphs[:100] + MULTILINGUAL + HELD_BACK


@pytest.mark.parity
def test_t5_tokenizer_fast_reads_the_artifacts_tokenizer_json_with_equal_ids(artifact, paragraphs):
    transformers = import_or_skip("transformers", "pip install transformers (the dev extra)")
    folder, _ = artifact
    tok = modkit.load_tokenizer(folder / "out")
    reference = transformers.T5TokenizerFast(tokenizer_file=str(folder / "out" / "tokenizer.json"), extra_ids=0)
    for text in texts(paragraphs):
        ids = tok.encode_plus(text, allow_special=True).ids
        assert reference(text).input_ids == ids, text
        assert reference.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True), text
    assert tok.encode("<extra_id_0> x </s>", allow_special=True)[0] == reference.convert_tokens_to_ids("<extra_id_0>")


@pytest.mark.parity
def test_export_hf_loads_in_t5_tokenizer_fast_and_auto_tokenizer_with_equal_ids(artifact, paragraphs, tmp_path):
    transformers = import_or_skip("transformers", "pip install transformers (the dev extra)")
    from modkit.builder.hf.convert import export_hf

    folder, _ = artifact
    dest = export_hf(folder / "out", tmp_path / "hf")
    tok = modkit.load_tokenizer(folder / "out")
    auto = transformers.AutoTokenizer.from_pretrained(str(dest))
    t5 = transformers.T5TokenizerFast.from_pretrained(str(dest))
    assert t5.eos_token == "</s>" and t5.pad_token_id == 0 and t5.convert_tokens_to_ids("<extra_id_0>") == 499
    for text in texts(paragraphs) + ["=" * 120, "-" * 80 + " " + "=-" * 40]:
        ids = tok.encode_plus(text, allow_special=True).ids
        assert auto(text).input_ids == ids, text
        # transformers 5's T5TokenizerFast rebuilds T5's pipeline (words split before the
        # Unigram); with the trained scores on a 1/128 grid every path sum is exact, so exact
        # ties (runs of '=') resolve the same either way
        assert t5(text).input_ids == ids, text
