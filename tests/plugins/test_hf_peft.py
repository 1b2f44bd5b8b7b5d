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


def test_a_stage_starts_from_a_lora_folder(tmp_path, corpus_path):
    from pathlib import Path

    from modkit.runtime.artifact import read_manifest

    comp = modkit.get_registry().get("tokenizer", "wordpiece")
    tok = comp.load().train([corpus_path], comp.options(vocab_size=200))
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path / "base", safe_serialization=True)
    tok.save(tmp_path / "base" / "tokenizer.json")
    get_peft_model(transformers.BertModel(config), LoraConfig(r=3, lora_alpha=6, target_modules=["query", "value"],
                                                              init_lora_weights=False)).save_pretrained(tmp_path / "a")
    rows = (Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt" / "modules.jsonl").read_text().splitlines()
    (tmp_path / "data.jsonl").write_text("\n".join(rows[:40]) + "\n")
    spec = tmp_path / "spec.toml"
    spec.write_text('''
name = "from-lora"
[backbone]
from = "base"
[[stages]]
objective = { use = "classify", labels = ["argparse", "datetime", "socket", "sqlite3", "unittest"] }
peft = [{ use = "lora", from = "a" }]
data = "data.jsonl"
steps = 2
batch_size = 4
seq_len = 32
[export]
merge = false
''')
    modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    (record,) = read_manifest(tmp_path / "out")["components"]["stages"][0]["peft"]
    assert record["options"]["r"] == 3 and record["options"]["alpha"] == 6
    assert record["options"]["targets"] == ["attn.q", "attn.v"] and record["kept"]
    # the unmerged LoRA goes back out as a PEFT folder over the export-hf base, with the same logits
    from click.testing import CliRunner

    from modkit.cli import main

    for command in (["export-hf", "out", "back"], ["export-peft", "out", "peft"]):
        r = CliRunner().invoke(main, [command[0], str(tmp_path / command[1]), str(tmp_path / command[2])])
        assert r.exit_code == 0, r.output
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    theirs = PeftModel.from_pretrained(hf, tmp_path / "peft" / "lora").eval()
    ours = modkit.load_model(tmp_path / "out")
    ids = torch.tensor([tok.encode_plus("The socket module", max_length=32).ids])
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        assert (ours(ids, torch.ones_like(ids)).logits - expected).abs().max() < 1e-5
    # options beside `from` are a spec error naming the key
    spec.write_text(spec.read_text().replace('from = "a" }', 'from = "a", r = 4 }'))
    with pytest.raises(modkit.SpecError, match=r"stages\[0\]\.peft\[0\]: options \['r'\] cannot be combined"):
        modkit.build(spec, tmp_path / "out2", progress=False, echo=lambda _: None)


def _train_like(model, seed=4):
    from modkit_plugins.peft.lora_impl import LoRALinear

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.update.B.copy_(torch.randn(m.update.B.shape, generator=g) * 0.2)


HF_CLASS = {"gpt2": transformers.GPT2LMHeadModel, "bert": transformers.BertModel,
            "bart": transformers.BartForConditionalGeneration, "t5": transformers.T5ForConditionalGeneration}


@pytest.mark.parametrize("family, targets", [
    ("gpt2", ["attn.q", "attn.v", "ffn.down"]),  # q and v of the fused c_attn, k left at zero
    ("bert", ["attn.*"]), ("bart", ["attn.q", "cross.v", "ffn.up"]), ("t5", ["attn.q", "attn.v"]),
])
def test_export_peft_writes_folders_peftmodel_loads_over_the_base(tmp_path, family, targets):
    from modkit.builder.hf.convert import hf_model, save_hf
    from modkit.builder.hf.peft_folders import export_peft
    from modkit_plugins.peft.lora import LoRAOptions
    from modkit_plugins.peft.lora_impl import LoRA

    hf_base(tmp_path, family, 2)
    ours = modkit.load_model(tmp_path / "base")
    LoRA(LoRAOptions(r=2, alpha=5, targets=targets)).apply(ours)
    _train_like(ours)
    save_hf(hf_model(ours), tmp_path / "back")  # what `modkit export-hf` writes: the base without LoRA
    (folder,) = export_peft(ours, tmp_path / "peft")
    theirs = PeftModel.from_pretrained(HF_CLASS[family].from_pretrained(tmp_path / "back").eval(), folder).eval()
    expected, got = outputs(theirs, family, hf=True), outputs(ours, family, hf=False)
    # within 1e-5 of the outputs' scale: the scale is folded into B, a rounding step PEFT orders differently
    assert (expected - got).abs().max() < 1e-5 * max(1.0, float(expected.abs().max()))


def test_export_peft_names_the_alternative_for_adapters(tmp_path):
    from modkit.builder.hf.peft_folders import export_peft
    from modkit_plugins.peft.adapter import AdapterOptions
    from modkit_plugins.peft.adapter_impl import Adapters

    hf_base(tmp_path, "bert", 0)
    model = modkit.load_model(tmp_path / "base")
    Adapters(AdapterOptions(bottleneck=4)).apply(model)
    with pytest.raises(UserError, match="no Houlsby bottleneck adapters; train with `lora`"):
        export_peft(model, tmp_path / "peft")


PREFIX_MODELS = {"gpt2": "CAUSAL_LM", "bert": "FEATURE_EXTRACTION", "bart": "SEQ_2_SEQ_LM", "t5": "SEQ_2_SEQ_LM"}


@pytest.mark.parametrize("family", PREFIX_MODELS)
@pytest.mark.parametrize("projection", [False, True])
def test_prefix_tuning_folder_gives_peftmodel_outputs(tmp_path, family, projection):
    from peft import PrefixTuningConfig

    base = hf_base(tmp_path, family, 0)
    config = PrefixTuningConfig(task_type=PREFIX_MODELS[family], num_virtual_tokens=3,
                                prefix_projection=projection, encoder_hidden_size=16)
    torch.manual_seed(7)
    get_peft_model(MODELS[family]().eval(), config).save_pretrained(tmp_path / "adapter")
    theirs = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ours = modkit.load_model(tmp_path / "base", peft=[tmp_path / "adapter"])
    expected, got = outputs(theirs, family, hf=True), outputs(ours, family, hf=False)
    assert (got - outputs(modkit.load_model(tmp_path / "base"), family, hf=False)).abs().max() > 1e-3
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("family", PREFIX_MODELS)
@pytest.mark.parametrize("projection, merged", [(0, False), (8, False), (8, True)])
def test_export_peft_writes_prefix_folders_peftmodel_loads_over_the_base(tmp_path, family, projection, merged):
    from modkit.builder.hf.convert import hf_model, save_hf
    from modkit.builder.hf.peft_folders import export_peft
    from modkit_plugins.peft.prefix import PrefixOptions
    from modkit_plugins.peft.prefix_impl import PrefixTuning

    hf_base(tmp_path, family, 5)
    ours = modkit.load_model(tmp_path / "base")
    plain = outputs(ours, family, hf=False)
    torch.manual_seed(11)
    method = PrefixTuning(PrefixOptions(length=3, projection=projection, positions="peft"))
    backbone = getattr(ours, "backbone", ours)  # BERT's base has no head
    method.apply(backbone)
    if merged:  # frozen to constants, as after a build
        method.merge(backbone)
    save_hf(hf_model(ours), tmp_path / "back")  # what `modkit export-hf` writes: the base without the prefix
    (folder,) = export_peft(ours, tmp_path / "peft")
    assert folder.name == "prefix"
    theirs = PeftModel.from_pretrained(HF_CLASS[family].from_pretrained(tmp_path / "back").eval(), folder).eval()
    assert theirs.peft_config["default"].task_type == PREFIX_MODELS[family]
    expected, got = outputs(theirs, family, hf=True), outputs(ours, family, hf=False)
    assert (got - plain).abs().max() > 1e-3  # the prefix changes something
    assert (got - expected).abs().max() < 1e-5
    # and the folder reads back into modkit as the same prefix
    again = modkit.load_model(tmp_path / "back", peft=[folder])
    assert (outputs(again, family, hf=False) - got).abs().max() < 1e-5


@pytest.mark.parametrize("options, message", [
    ({}, 'this prefix has no position.*positions = "peft"'),
    ({"positions": "peft", "placement": "all"}, 'placement = "all" has no PEFT folder'),
])
def test_export_peft_names_the_alternative_for_prefixes_peft_cannot_hold(tmp_path, options, message):
    from modkit.builder.hf.peft_folders import export_peft
    from modkit_plugins.peft.prefix import PrefixOptions
    from modkit_plugins.peft.prefix_impl import PrefixTuning

    hf_base(tmp_path, "bart", 0)
    model = modkit.load_model(tmp_path / "base")
    PrefixTuning(PrefixOptions(length=2, **options)).apply(getattr(model, "backbone", model))
    with pytest.raises(UserError, match=message):
        export_peft(model, tmp_path / "peft")
    assert not (tmp_path / "peft" / "prefix").exists()
