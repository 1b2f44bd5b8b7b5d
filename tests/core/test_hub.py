"""hf: names: a backbone, tokenizer and PEFT folder read from a cache laid out as huggingface_hub
lays it out (blobs, snapshots/<commit> links, refs), offline; the commit recorded; an offline
miss is exit 2 saying how to fetch it. Nothing is downloaded."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model
from safetensors.numpy import load_file

import modkit
from modkit.errors import SpecError
from modkit.spec import load_spec

MODKIT = [sys.executable, "-m", "modkit"]
BASE, LORA = "a" * 40, "b" * 40  # commits
LABELS = ["argparse", "datetime", "socket", "sqlite3", "unittest"]


def put_in_cache(cache: Path, repo: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",),
                 kind: str = "models") -> None:
    """``folder``'s files as huggingface_hub stores a snapshot: content-named blobs, the snapshot's
    files linked to them, each ref naming the commit."""
    root = cache / f"{kind}--{repo.replace('/', '--')}"
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, corpus_path):
    """A tiny BERT with its tokenizer and a LoRA folder, both local and in a cache."""
    folder = tmp_path_factory.mktemp("hub")
    comp = modkit.get_registry().get("tokenizer", "wordpiece")
    tok = comp.load().train([corpus_path], comp.options(vocab_size=200))
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder / "base", safe_serialization=True)
    tok.save(folder / "base" / "tokenizer.json")
    get_peft_model(transformers.BertModel(config), LoraConfig(r=3, lora_alpha=6, target_modules=["query", "value"],
                                                              init_lora_weights=False)).save_pretrained(folder / "lora")
    put_in_cache(folder / "cache", "modkit-tests/tiny-bert", folder / "base", BASE)
    put_in_cache(folder / "cache", "modkit-tests/tiny-lora", folder / "lora", LORA, refs=("main", "v1"))
    rows = (Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt" / "modules.jsonl").read_text().splitlines()
    (folder / "data.jsonl").write_text("\n".join(rows[:40]) + "\n")
    return folder


def _spec(folder: Path, base: str, lora: str, name: str) -> Path:
    spec = folder / f"{name}.toml"
    spec.write_text(f'name = "{name}"\n[backbone]\nfrom = "{base}"\n[[stages]]\n'
                    f'objective = {{ use = "classify", labels = {LABELS} }}\npeft = [{{ use = "lora", from = "{lora}" }}]\n'
                    'data = "data.jsonl"\nsteps = 2\nbatch_size = 4\nseq_len = 32\n[export]\nonnx = false\n')
    return spec


@pytest.fixture
def offline(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_backbone_tokenizer_and_peft_read_by_hub_name_with_the_commit_recorded(offline, tmp_path):
    hub = offline
    by_name = modkit.build(_spec(hub, "hf:modkit-tests/tiny-bert", "hf:modkit-tests/tiny-lora@v1", "named"),
                           tmp_path / "named", progress=False, echo=lambda _: None)
    comps = by_name["components"]
    assert comps["backbone"]["hub"] == {"repo_id": "modkit-tests/tiny-bert", "requested": "main", "revision": BASE}
    assert comps["tokenizer"]["hub"] == comps["backbone"]["hub"]  # the checkpoint carries its tokenizer
    (lora,) = comps["stages"][0]["peft"]
    assert lora["hub"] == {"repo_id": "modkit-tests/tiny-lora", "requested": "v1", "revision": LORA}
    assert lora["options"]["r"] == 3 and lora["from"] == "hf:modkit-tests/tiny-lora@v1"
    # the same weights as from the folders themselves
    modkit.build(_spec(hub, str(hub / "base"), str(hub / "lora"), "local"), tmp_path / "local",
                 progress=False, echo=lambda _: None)
    named, local = load_file(tmp_path / "named" / "model.safetensors"), load_file(tmp_path / "local" / "model.safetensors")
    assert named.keys() == local.keys() and all((named[k] == local[k]).all() for k in named)
    card = ModelCard.load(tmp_path / "named" / "README.md")
    assert card.data.base_model == "modkit-tests/tiny-bert" and f"modkit-tests/tiny-bert @ {BASE}" in card.text


def test_a_commit_can_be_named_and_loaders_take_hub_names(offline):
    assert modkit.load_tokenizer(f"hf:modkit-tests/tiny-bert@{BASE}").vocab_size > 100
    model = modkit.load_model("hf:modkit-tests/tiny-bert")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_an_offline_miss_is_exit_2_saying_how_to_fetch_it(offline, tmp_path):
    spec = _spec(offline, "hf:modkit-tests/not-cached@v2", str(offline / "lora"), "missing")
    result = subprocess.run([*MODKIT, "build", str(spec), "-o", str(tmp_path / "out")], capture_output=True, text=True,
                            env={**os.environ})
    assert result.returncode == 2, result.stderr
    assert "hf:modkit-tests/not-cached@v2: modkit-tests/not-cached at 'v2' is not in the Hugging Face cache" in result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr
    assert "`hf download modkit-tests/not-cached --revision v2`" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_malformed_hub_name_is_a_spec_error(offline):
    with pytest.raises(SpecError, match=r"backbone\.from: 'hf:a/b/c' is not a Hugging Face name"):
        load_spec(_spec(offline, "hf:a/b/c", str(offline / "lora"), "bad"))


def test_a_dataset_repository_is_read_through_the_cache(offline, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"review": f"line {i} of the reviews", "stars": i % 5} for i in range(30)]
    (tmp_path / "repo" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:20]), tmp_path / "repo" / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[20:]), tmp_path / "repo" / "data" / "train-00001-of-00002.parquet")
    (tmp_path / "repo" / "README.md").write_text("---\nlicense: mit\n---\n")
    put_in_cache(Path(os.environ["HF_HUB_CACHE"]), "modkit-tests/reviews", tmp_path / "repo", "c" * 40, kind="datasets")
    (offline / "corpus.txt").write_text("unused\n")
    spec = offline / "dataset.toml"
    data = '{ repo = "hf:modkit-tests/reviews", path = "data/train-*.parquet", fields = { text = "review" } }'
    spec.write_text(f'name = "d"\n[backbone]\nfrom = "{offline / "base"}"\n[[stages]]\nobjective = {{ use = "mlm" }}\n'
                    f'data = {data}\nsteps = 1\n')
    loaded = load_spec(spec)
    assert loaded.sources[0]["data"].component.name == "parquet"  # from the path's ending
    got = loaded.data_file(0, loaded.objectives[0][0].component.load())
    assert got.path.read_text() == "".join(r["review"] + "\n" for r in rows)
    assert got.record["hub"] == {"repo_id": "modkit-tests/reviews", "requested": "main", "revision": "c" * 40}
    assert list(got.record["files"]) == [f"data/train-0000{i}-of-00002.parquet" for i in (0, 1)]
    spec.write_text(spec.read_text().replace("hf:modkit-tests/reviews", "hf:modkit-tests/absent"))
    result = subprocess.run([*MODKIT, "build", str(spec), "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "`hf download modkit-tests/absent --revision main --repo-type dataset`" \
        in result.stderr, result.stderr
