"""The `mlm` objective: BERT's masking rates, whole words, training, and fill-mask served
by onnxruntime equal to transformers' fill-mask pipeline on a BertForMaskedLM checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import modkit
from modkit import load_tokenizer
from modkit.builder.build import build
from modkit.errors import ArtifactError
from modkit.runtime import Runtime
from modkit_plugins.objectives.masking import IGNORE, mask_tokens, word_starts
from specs import build_from_checkpoint

WORDS = ("the a module function class returns value list string file object name type error "
         "data time path call default new key set open read write code test system python").split()


def test_masking_rates_follow_the_options():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 1000, (400, 128), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False
    inputs, labels = mask_tokens(ids, maskable, probability=0.2, mask_rate=0.7, random_rate=0.2, mask_id=3,
                                 random_ids=torch.arange(10, 1000), generator=g)
    chosen = labels != IGNORE
    assert not chosen[~maskable].any()
    assert torch.equal(labels[chosen], ids[chosen])
    n = chosen.sum().item()
    assert abs(n / maskable.sum().item() - 0.2) < 0.005
    masked = (inputs == 3) & chosen
    kept = (inputs == ids) & chosen
    assert abs(masked.sum().item() / n - 0.7) < 0.01
    assert abs(kept.sum().item() / n - (0.1 + 0.2 / 990)) < 0.01  # a random draw may hit the same token
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_whole_word_masking_takes_every_piece(tmp_path):
    from modkit_plugins.tokenizers.wordpiece import WordPieceOptions
    from modkit_plugins.tokenizers.wordpiece_model import WordPieceTokenizer

    (tmp_path / "c.txt").write_text("unbelievable internationalization " * 3 + " ".join(WORDS) * 20)
    tok = WordPieceTokenizer.train([tmp_path / "c.txt"], WordPieceOptions(vocab_size=120, min_frequency=1))
    ids, starts = word_starts(tok, "the unbelievable internationalization of a module " * 30)
    assert not all(starts)  # long words split into pieces
    ids, starts = torch.tensor([ids]), torch.tensor([starts])
    inputs, labels = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), probability=0.3, mask_rate=1.0,
                                 random_rate=0.0, mask_id=4, random_ids=torch.arange(5, 100),
                                 generator=torch.Generator().manual_seed(0), word_start=starts)
    chosen = (labels != IGNORE)[0].tolist()
    word = torch.cumsum(starts[0].long(), 0).tolist()
    for k in range(1, len(chosen)):
        if word[k] == word[k - 1]:
            assert chosen[k] == chosen[k - 1]  # pieces of one word share the draw
    assert 0.15 < sum(chosen) / len(chosen) < 0.45


@pytest.fixture(scope="module")
def bert_mlm_checkpoint(tmp_path_factory):
    """A random tiny BertForMaskedLM with its tokenizer files, as transformers saves them."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("bert-mlm")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS + ["##s", "##ed", "##ing"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    hf_tok = transformers.BertTokenizerFast(str(folder / "vocab.txt"))
    torch.manual_seed(7)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=64)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # sharper than the init, so the top fillers are well apart
        model.cls.predictions.bias.normal_(0, 2.0)
    model.save_pretrained(folder, safe_serialization=True)
    hf_tok.save_pretrained(folder)
    return folder, model, hf_tok


@pytest.mark.parity
def test_fill_mask_equals_the_transformers_pipeline(bert_mlm_checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder, model, hf_tok = bert_mlm_checkpoint
    (tmp_path / "corpus.txt").write_text(" ".join(WORDS * 40))
    manifest = build_from_checkpoint(tmp_path, folder, '{ use = "mlm", top_k = 5 }', "corpus.txt", 32)
    assert manifest["parity"]["max_abs_diff"] < 1e-4
    texts = ["the [MASK] returns a value.", "open a [MASK] , read the data", "[MASK] python"]
    ours = Runtime(tmp_path / "out").run(texts)
    pipe = transformers.pipeline("fill-mask", model=model, tokenizer=hf_tok, top_k=5)
    for text, got in zip(texts, ours):
        want = pipe(text)
        assert [f["token"] for f in got["masks"][0]] == [w["token"] for w in want]
        assert max(abs(f["score"] - w["score"]) for f, w in zip(got["masks"][0], want)) < 1e-5
        assert [f["token_str"] for f in got["masks"][0]] == [w["token_str"] for w in want]
        assert [f["sequence"] for f in got["masks"][0]] == [w["sequence"] for w in want]


def test_mlm_trains_exports_and_serves_without_torch(tmp_path, corpus_path):
    (tmp_path / "c.txt").write_text(corpus_path.read_text()[:60_000])
    (tmp_path / "spec.toml").write_text("""
name = "tiny-mlm"
[tokenizer]
use = "wordpiece"
vocab_size = 400
train_on = "c.txt"
[backbone]
use = "bert"
d_model = 32
n_layers = 1
n_heads = 2
dropout = 0.0
[[stages]]
objective = { use = "mlm", whole_word_mask = true }
data = "c.txt"
steps = 40
batch_size = 8
seq_len = 32
lr = 3e-3
""")
    manifest = build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    report = manifest["stages"][0]
    assert report["loss_last_10"] < report["loss_first_10"] - 0.5
    assert manifest["task"]["task"] == "fill-mask" and manifest["parity"]["max_abs_diff"] < 1e-4
    code = ("import sys, json; from modkit.runtime import Runtime; "
            "r = Runtime(sys.argv[1]).run(['the [MASK] module']); "
            "assert 'torch' not in sys.modules; print(json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True, check=True)
    fills = json.loads(out.stdout)[0]["masks"][0]
    scores = [f["score"] for f in fills]
    assert len(fills) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    tok = load_tokenizer(tmp_path / "out")
    assert all(f["sequence"] == tok.decode(tok.encode("the") + [f["token"]] + tok.encode("module"),
                                           skip_special_tokens=True) for f in fills)
    # the runtime reads the record through the task's own model: typed, and a missing field named at load
    from modkit_plugins.objectives.records import FillMaskRecord

    loaded = Runtime(tmp_path / "out").task
    assert isinstance(loaded, FillMaskRecord) and loaded.mask_token_id == tok.token_to_id("[MASK]")
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    del doc["task"]["mask_token_id"]
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"manifest.json: task.mask_token_id: Field required \(the 'fill-mask' "
                                            r"task's record, FillMaskRecord\)"):
        Runtime(tmp_path / "out")


@pytest.mark.parity
def test_export_hf_writes_a_bert_for_masked_lm(tmp_path, bert_mlm_checkpoint):
    """A fill-mask artifact goes back to transformers as BertForMaskedLM with the same logits."""
    transformers = pytest.importorskip("transformers")
    from modkit.builder.hf.convert import export_hf

    folder, model, _ = bert_mlm_checkpoint
    (tmp_path / "corpus.txt").write_text(" ".join(WORDS * 40))
    (tmp_path / "spec.toml").write_text(f"""
name = "fill"
[backbone]
from = "{folder}"
[[stages]]
objective = {{ use = "mlm" }}
data = "corpus.txt"
steps = 3
seq_len = 16
""")
    build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda m: None)
    export_hf(tmp_path / "out", tmp_path / "hf")
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == "BertForMaskedLM"
    ids = torch.randint(5, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(3))
    ours = modkit.load_model(tmp_path / "out")
    with torch.no_grad():
        diff = (ours(ids).logits - theirs(ids).logits).abs().max().item()
    trained = (theirs(ids).logits - model(ids).logits).abs().max().item()
    assert diff < 1e-5 and trained > 1e-4  # the trained weights, not the starting checkpoint
