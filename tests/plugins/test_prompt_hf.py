"""Prompt tuning against Hugging Face PEFT's PROMPT_TUNING: its folders read into modkit give
PeftModel's outputs, and the folders modkit writes give PeftModel modkit's."""
from __future__ import annotations

import pytest
import torch
import transformers
from peft import PeftModel, PromptTuningConfig, get_peft_model

import modkit

VOCAB, P = 61, 4
TASKS = {"gpt2": "CAUSAL_LM", "bert": "FEATURE_EXTRACTION", "bart": "SEQ_2_SEQ_LM", "t5": "SEQ_2_SEQ_LM"}
MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)),
    "bert": lambda: transformers.BertModel(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32)),
    "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32)),
    "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4)),
}
HF_CLASS = {"gpt2": transformers.GPT2LMHeadModel, "bert": transformers.BertModel,
            "bart": transformers.BartForConditionalGeneration, "t5": transformers.T5ForConditionalGeneration}


def batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask, torch.randint(3, VOCAB, (3, 5), generator=g)


def outputs(model, family: str, hf: bool) -> torch.Tensor:
    """What to compare at the real tokens: PeftModel's outputs carry the P virtual positions
    first (a decoder-only's and an encoder's), modkit's do not."""
    ids, mask, dec = batch()
    seq2seq = family in ("bart", "t5")
    kwargs = {"decoder_input_ids": dec} if seq2seq else {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **kwargs) if hf else model(ids, mask, **kwargs)
    if seq2seq:
        return out.logits
    values = out.last_hidden_state if family == "bert" else out.logits
    return (values[:, P:] if hf else values)[mask.bool()]


def base(tmp_path, family: str, seed: int):
    torch.manual_seed(seed)
    model = MODELS[family]().eval()
    model.save_pretrained(tmp_path / "base", safe_serialization=True)
    return model


@pytest.mark.parity
@pytest.mark.parametrize("family", TASKS)
def test_a_prompt_tuning_folder_gives_peftmodel_outputs(tmp_path, family):
    hf = base(tmp_path, family, 0)
    torch.manual_seed(7)
    get_peft_model(MODELS[family]().eval(), PromptTuningConfig(task_type=TASKS[family], num_virtual_tokens=P)) \
        .save_pretrained(tmp_path / "adapter")
    theirs = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    ours = modkit.load_model(tmp_path / "base", peft=[tmp_path / "adapter"])
    got = outputs(ours, family, hf=False)
    assert (got - outputs(modkit.load_model(tmp_path / "base"), family, hf=False)).abs().max() > 1e-3
    assert (got - outputs(theirs, family, hf=True)).abs().max() < 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("family", TASKS)
@pytest.mark.parametrize("merged", [False, True])
def test_export_peft_writes_prompt_folders_peftmodel_loads_over_the_base(tmp_path, family, merged):
    from modkit.builder.hf.convert import hf_model, save_hf
    from modkit.builder.hf.peft_folders import export_peft
    from modkit_plugins.peft.prompt import PromptOptions
    from modkit_plugins.peft.prompt_impl import PromptTuning

    base(tmp_path, family, 5)
    ours = modkit.load_model(tmp_path / "base")
    plain = outputs(ours, family, hf=False)
    torch.manual_seed(11)
    method = PromptTuning(PromptOptions(num_virtual_tokens=P, init="vocab"))
    backbone = getattr(ours, "backbone", ours)
    method.apply(backbone)
    if merged:  # frozen to a constant, as after a build
        method.merge(backbone)
    save_hf(hf_model(ours), tmp_path / "back")  # `modkit export-hf`: the base without the prompt
    (folder,) = export_peft(ours, tmp_path / "peft")
    assert folder.name == "prompt"
    theirs = PeftModel.from_pretrained(HF_CLASS[family].from_pretrained(tmp_path / "back").eval(), folder).eval()
    assert theirs.peft_config["default"].peft_type == "PROMPT_TUNING"
    got = outputs(ours, family, hf=False)
    assert (got - plain).abs().max() > 1e-3  # the prompt changes something
    assert (got - outputs(theirs, family, hf=True)).abs().max() < 1e-5
    again = modkit.load_model(tmp_path / "back", peft=[folder])  # and reads back as the same prompt
    assert (outputs(again, family, hf=False) - got).abs().max() < 1e-5
