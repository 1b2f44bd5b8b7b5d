"""GPT-1 / GPT-2 Hugging Face checkpoints: loaded by modkit, same numbers as transformers."""
from __future__ import annotations

import pytest
import torch

import modkit
from modkit.builder.hf.convert import save_hf

from conftest_hf import TOL, compare_outputs, padded_batch
from specs import build_from_checkpoint

transformers = pytest.importorskip("transformers")

VOCAB = 61
FAMILIES = {
    "gpt2": (lambda **kw: transformers.GPT2Config(**{
        "vocab_size": VOCAB, "n_positions": 24, "n_embd": 32, "n_layer": 2, "n_head": 4,
        "bos_token_id": 0, "eos_token_id": 0, **kw}),
        transformers.GPT2Model, transformers.GPT2LMHeadModel),
    "openai-gpt": (lambda **kw: transformers.OpenAIGPTConfig(**{
        "vocab_size": VOCAB, "n_positions": 24, "n_embd": 32, "n_layer": 2, "n_head": 4, **kw}),
        transformers.OpenAIGPTModel, transformers.OpenAIGPTLMHeadModel),
}


def hf_checkpoint(tmp_path, family, head=True, **config):
    make_config, base, lm = FAMILIES[family]
    torch.manual_seed(0)
    model = (lm if head else base)(make_config(attn_implementation="eager", **config)).eval()
    with torch.no_grad():  # LayerNorms away from their 1/0 init, so a swapped weight shows
        for name, p in model.named_parameters():
            if "ln" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model.save_pretrained(tmp_path / family, safe_serialization=True)
    return model, tmp_path / family


@pytest.mark.parametrize("family", FAMILIES)
def test_lm_head_checkpoint_matches_transformers(tmp_path, family):
    theirs, folder = hf_checkpoint(tmp_path, family)
    ours = modkit.load_model(folder)
    ids, mask = padded_batch(VOCAB)
    kw = dict(attention_mask=mask, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        a, b = ours(ids, **kw), theirs(ids, **kw)
    # GPT-1 masks the future with -1e4, so a left-padding query (which sees no real key)
    # attends to future tokens in transformers; only real positions carry meaning there.
    rows = mask if family == "openai-gpt" else None
    diffs = compare_outputs(a, b, ["logits", "last_hidden_state", "hidden_states", "attentions"], rows)
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.parametrize("family", FAMILIES)
def test_bare_checkpoint_loads_without_head(tmp_path, family):
    theirs, folder = hf_checkpoint(tmp_path, family, head=False)
    ours = modkit.load_model(folder)
    ids, mask = padded_batch(VOCAB, seed=1)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, output_hidden_states=True)
        b = theirs(ids, attention_mask=mask, output_hidden_states=True)
    assert a.logits is None
    rows = mask if family == "openai-gpt" else None
    diffs = compare_outputs(a, b, ["last_hidden_state", "hidden_states"], rows)
    assert max(diffs.values()) < TOL, diffs


def test_gpt2_sdpa_matches_on_real_positions(tmp_path):
    """transformers' default SDPA path, compared where tokens are real."""
    _, folder = hf_checkpoint(tmp_path, "gpt2")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    ours = modkit.load_model(folder)
    ids, mask = padded_batch(VOCAB, seed=2)
    with torch.no_grad():
        diffs = compare_outputs(ours(ids, attention_mask=mask), theirs(ids, attention_mask=mask),
                                ["logits"], mask)
    assert diffs["logits"] < TOL, diffs


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_is_transformers_greedy(tmp_path, family):
    theirs, folder = hf_checkpoint(tmp_path, family)
    ours = modkit.load_model(folder)
    ids, mask = padded_batch(VOCAB, seed=3, length=6)
    mask[2] = 1  # left padding only, as one generates
    kw = dict(max_new_tokens=10, do_sample=False)
    expected = theirs.generate(ids, attention_mask=mask, pad_token_id=0, **kw)
    assert torch.equal(ours.generate(ids, attention_mask=mask, **kw), expected)
    expected = theirs.generate(ids[:1], pad_token_id=0, **kw)
    assert torch.equal(ours.generate(ids[:1], **kw), expected)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", [True, False])
def test_modkit_to_hf_to_modkit_is_bit_identical(tmp_path, family, head):
    _, folder = hf_checkpoint(tmp_path, family, head=head)
    first = modkit.load_model(folder)
    save_hf(first, tmp_path / "out")
    second = modkit.load_model(tmp_path / "out")
    assert type(second) is type(first)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_exported_folder_loads_in_transformers_with_same_outputs(tmp_path, family):
    _, folder = hf_checkpoint(tmp_path, family)
    ours = modkit.load_model(folder)
    save_hf(ours, tmp_path / "out")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids, _ = padded_batch(VOCAB, seed=4)
    with torch.no_grad():
        diffs = compare_outputs(ours(ids), theirs(ids), ["logits"])
    assert diffs["logits"] < TOL, diffs


def test_untied_head_round_trips(tmp_path):
    theirs, folder = hf_checkpoint(tmp_path, "gpt2", tie_word_embeddings=False)
    ours = modkit.load_model(folder)
    assert ours.backbone.lm_head is not None
    ids, mask = padded_batch(VOCAB, seed=5)
    with torch.no_grad():
        diffs = compare_outputs(ours(ids, attention_mask=mask), theirs(ids, attention_mask=mask), ["logits"])
    assert diffs["logits"] < TOL, diffs
    save_hf(ours, tmp_path / "out")
    again = modkit.load_model(tmp_path / "out")
    assert torch.equal(again.backbone.lm_head.weight, ours.backbone.lm_head.weight)


def test_unknown_weight_names_are_listed(tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = hf_checkpoint(tmp_path, "gpt2")
    weights = load_file(folder / "model.safetensors")
    weights["transformer.h.0.attn.rotary.weight"] = torch.zeros(2)
    weights["score.weight"] = torch.zeros(2, 32)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(modkit.ArtifactError, match=r"2 weight name\(s\) not recognised: "
                       r"score\.weight, transformer\.h\.0\.attn\.rotary\.weight"):
        modkit.load_model(folder)


def test_unsupported_setting_is_refused(tmp_path):
    _, folder = hf_checkpoint(tmp_path, "gpt2", scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(modkit.ArtifactError, match="scale_attn_by_inverse_layer_idx"):
        modkit.load_model(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_bare_checkpoint_saved_untied_loads(tmp_path, family):
    # GPT2Model / OpenAIGPTModel have no head, so tie_word_embeddings=false leaves no
    # lm_head.weight in the file: there is nothing to untie
    theirs, folder = hf_checkpoint(tmp_path, family, head=False, tie_word_embeddings=False)
    ours = modkit.load_model(folder)
    ids, mask = padded_batch(VOCAB, seed=6)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, output_hidden_states=True)
        b = theirs(ids, attention_mask=mask, output_hidden_states=True)
    rows = mask if family == "openai-gpt" else None
    diffs = compare_outputs(a, b, ["last_hidden_state", "hidden_states"], rows)
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_with_few_positions_builds_and_exports(tmp_path, family):
    # the cached-graph check generates 16 tokens after an 8-token prompt: a checkpoint with
    # n_positions=12 is checked on the positions it has instead of failing the build
    import numpy as np
    import onnxruntime

    theirs, folder = hf_checkpoint(tmp_path, family, n_positions=12)
    words = [f"w{i}" for i in range(VOCAB - 5)]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    (tmp_path / "c.txt").write_text(" ".join(words * 8))
    build_from_checkpoint(tmp_path, folder, '{ use = "clm" }', "c.txt", 12)
    ids, mask = padded_batch(VOCAB, seed=7, length=12)
    if family == "openai-gpt":  # see test_lm_head_checkpoint_matches_transformers: compare real rows
        mask[1] = 1
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    [logits] = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        expected = theirs(ids, attention_mask=mask).logits.numpy()
    assert np.abs(logits - expected)[mask.numpy().astype(bool)].max() < TOL
