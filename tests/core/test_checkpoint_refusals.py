"""Hugging Face folders modkit refuses, and why; these need no transformers, so they always run."""
from __future__ import annotations

import json

import pytest
import torch

import modkit
from modkit.builder.checkpoints import save_hf


def test_pickle_only_checkpoint_is_refused_with_the_reason(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(modkit.ArtifactError, match=r"only pickle weights.*can run code.*safetensors only"):
        modkit.load_model(folder)


def test_unknown_model_type_names_the_supported_ones(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(modkit.ArtifactError, match=r"'llama' is not supported \(supported: bart, bert, gpt2, openai-gpt, t5\)"):
        modkit.load_model(folder)


def test_save_hf_refuses_a_model_no_format_writes(tmp_path):
    with pytest.raises(modkit.ArtifactError, match="no checkpoint format can write a Linear"):
        save_hf(torch.nn.Linear(2, 2), tmp_path / "x")
