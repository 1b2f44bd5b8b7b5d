"""Hugging Face folders modkit refuses, and why; these need no transformers, so they always run."""
from __future__ import annotations

import json

import pytest
import torch

import modkit
from modkit.builder.hf.convert import save_hf


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


@pytest.mark.parametrize("settings, message", [
    ({"repetition_penalty": "strong"}, "repetition_penalty: Input should be a valid number"),
    ({"repetition_penalty": 0}, "repetition_penalty: Input should be greater than 0"),
    ({"suppress_tokens": 5}, "suppress_tokens: Input should be a valid list"),
    ({"begin_suppress_tokens": [-1]}, "begin_suppress_tokens.0: Input should be greater than or equal to 0"),
    ({"bad_words_ids": [3, 4]}, "bad_words_ids.0: Input should be a valid list"),
    ({"bad_words_ids": [[3], []]}, "bad_words_ids.1: List should have at least 1 item"),
    ({"bad_words_ids": [[3, 99]]}, r"bad_words_ids: tokens \[99\] are outside the vocabulary \(50\)"),
    ({"suppress_tokens": [7], "forced_eos_token_id": 7}, "forced_eos_token_id 7 is also in suppress_tokens"),
])
def test_bad_generation_settings_name_the_file_and_the_key(tmp_path, settings, message):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 50}))
    (folder / "generation_config.json").write_text(json.dumps(settings))
    with pytest.raises(modkit.ArtifactError, match=f"generation_config.json: .*{message}"):
        modkit.load_model(folder)
