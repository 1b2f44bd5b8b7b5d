"""Hugging Face PEFT adapter folders applied by modkit give PeftModel's outputs."""
from __future__ import annotations

import pytest
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model

import modkit
from modkit.errors import ArtifactError, UserError

VOCAB = 61


def _gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0))


def _bert():
    return transformers.BertModel(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32))


def _bart():
    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32))


def _t5():
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4))


MODELS = {"gpt2": _gpt2, "bert": _bert, "bart": _bart, "t5": _t5}
LORA_TARGETS = {  # what users target in each family, GPT-2's fused c_attn included
    "gpt2": ["c_attn", "c_proj"],
    "bert": ["query", "value", "output.dense"],
    "bart": ["q_proj", "v_proj", "fc1"],
    "t5": ["q", "v", "wo"],
}


def hf_base(tmp_path, family, seed):
    torch.manual_seed(seed)
    model = MODELS[family]().eval()
    model.save_pretrained(tmp_path / "base", safe_serialization=True)
    return model


def batch(seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask, torch.randint(3, VOCAB, (3, 5), generator=g)


def outputs(model, family, hf: bool):
    ids, mask, dec = batch()
    kwargs = {"decoder_input_ids": dec} if family in ("bart", "t5") else {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **kwargs) if hf else model(ids, mask, **kwargs)
    if family == "bert":
        return out.last_hidden_state[mask.bool()]
    return out.logits[mask.bool()] if family == "gpt2" else out.logits


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("seed", [0, 1])
def test_lora_folder_gives_peftmodel_outputs(tmp_path, family, seed):
    base = hf_base(tmp_path, family, seed)
    config = LoraConfig(r=4, lora_alpha=8 + seed, target_modules=LORA_TARGETS[family],
                        init_lora_weights=False, use_rslora=bool(seed))  # B random: the update matters
    torch.manual_seed(seed + 10)
    get_peft_model(MODELS[family]().eval(), config).save_pretrained(tmp_path / "adapter")
    # the adapter was made on another random model: only its own weights travel
    theirs = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ours = modkit.load_model(tmp_path / "base", peft=[tmp_path / "adapter"])
    expected, got = outputs(theirs, family, hf=True), outputs(ours, family, hf=False)
    plain = outputs(modkit.load_model(tmp_path / "base"), family, hf=False)
    assert (got - plain).abs().max() > 1e-3  # the adapter changes something
    assert (got - expected).abs().max() < 1e-5


def test_a_folder_without_adapter_files_is_a_clear_error(tmp_path):
    hf_base(tmp_path, "bert", 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a PEFT adapter folder"):
        modkit.load_model(tmp_path / "base", peft=[tmp_path / "empty"])


def test_dora_is_refused_by_name(tmp_path):
    hf_base(tmp_path, "bert", 0)
    get_peft_model(_bert(), LoraConfig(r=2, target_modules=["query"], use_dora=True)).save_pretrained(tmp_path / "a")
    with pytest.raises(UserError, match="use_dora is not supported"):
        modkit.load_model(tmp_path / "base", peft=[tmp_path / "a"])
