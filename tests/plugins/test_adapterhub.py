"""AdapterHub (`adapters` 1.x) Houlsby adapters load onto BERT with AdapterHub's outputs.

The fixture (a random tiny BERT, a double_seq_bn adapter with random weights, inputs and
AdapterHub's outputs) was made in a separate environment by
tests/fixtures/adapterhub/make_fixture.py, because `adapters` needs an older transformers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import modkit
from modkit.errors import ArtifactError, UserError
from modkit_plugins.peft.adapter_impl import AdapterLayer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "adapterhub"


def _run(model, io):
    with torch.no_grad():
        return model(io["input_ids"], io["attention_mask"]).last_hidden_state


def test_houlsby_adapter_gives_adapterhub_outputs():
    io = load_file(str(FIXTURE / "io.safetensors"))
    model = modkit.load_model(FIXTURE / "base", peft=[FIXTURE / "houlsby"])
    real = io["attention_mask"].bool()
    got, expected = _run(model, io)[real], io["expected"][real]
    plain = _run(modkit.load_model(FIXTURE / "base"), io)[real]
    assert (expected - plain).abs().max() > 1e-2  # the adapter changes the outputs
    assert (got - expected).abs().max() <= 1e-5
    adapters = [m for m in model.modules() if isinstance(m, AdapterLayer)]
    assert sorted(a.modkit_role for a in adapters) == ["attn.o", "attn.o", "ffn.down", "ffn.down"]
    d, m = 32, 8
    assert all(sum(p.numel() for p in a.adapter.parameters()) == 2 * d * m + d + m for a in adapters)


def _copy(tmp_path, **changes):
    folder = tmp_path / "houlsby"
    shutil.copytree(FIXTURE / "houlsby", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["config"].update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_a_scaled_adapter_folds_its_scale_into_the_up_projection(tmp_path):
    io = load_file(str(FIXTURE / "io.safetensors"))
    plain = _run(modkit.load_model(FIXTURE / "base"), io)
    full = _run(modkit.load_model(FIXTURE / "base", peft=[FIXTURE / "houlsby"]), io)
    zero = _run(modkit.load_model(FIXTURE / "base", peft=[_copy(tmp_path, scaling=0.0)]), io)
    assert (zero - plain).abs().max() < 1e-6 and (full - plain).abs().max() > 1e-2


@pytest.mark.parametrize("changes, message", [
    ({"original_ln_before": True}, "original_ln_before = True is not a Houlsby-style"),
    ({"use_gating": True}, "use_gating = True"),
    ({"scaling": "learned"}, "scaling = 'learned'"),
    ({"non_linearity": "leakyrelu"}, "non_linearity 'leakyrelu' is not one of"),
])
def test_other_adapterhub_configs_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(UserError, match=message):
        modkit.load_model(FIXTURE / "base", peft=[_copy(tmp_path, **changes)])


def test_a_pickled_adapterhub_folder_is_refused(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    shutil.copy(FIXTURE / "houlsby" / "adapter_config.json", folder)
    (folder / "pytorch_adapter.bin").write_bytes(b"not read")
    with pytest.raises(ArtifactError, match="pytorch_adapter.bin is pickle"):
        modkit.load_model(FIXTURE / "base", peft=[folder])


def test_a_stage_starts_from_an_adapterhub_folder(tmp_path, corpus_path):
    """`peft = [{ use = "adapter", from = ... }]`: the build trains on from the AdapterHub
    weights, exports ONNX with the enforced parity check and records the adapter."""
    import transformers

    from modkit.runtime.artifact import read_manifest

    comp = modkit.get_registry().get("tokenizer", "wordpiece")
    tok = comp.load().train([corpus_path], comp.options(vocab_size=200))
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path / "base", safe_serialization=True)
    tok.save(tmp_path / "base" / "tokenizer.json")
    rows = (Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt" / "modules.jsonl").read_text().splitlines()
    (tmp_path / "data.jsonl").write_text("\n".join(rows[:40]) + "\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(f'''
name = "from-adapterhub"
[backbone]
from = "base"
[[stages]]
objective = {{ use = "classify", labels = ["argparse", "datetime", "socket", "sqlite3", "unittest"] }}
peft = [{{ use = "adapter", from = "{FIXTURE / 'houlsby'}" }}]
data = "data.jsonl"
steps = 2
batch_size = 4
seq_len = 32
lr = 1e-12
''')
    modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    manifest = read_manifest(tmp_path / "out")
    (record,) = manifest["components"]["stages"][0]["peft"]
    assert record["options"]["bottleneck"] == 8 and record["options"]["activation"] == "swish"
    assert record["options"]["targets"] == ["attn.o", "ffn.down"] and record["kept"]
    assert (tmp_path / "out" / "model.onnx").is_file()  # exported, past the build's parity check
    # (nearly) no learning rate: the artifact's adapters are AdapterHub's weights
    hub = load_file(str(FIXTURE / "houlsby" / "adapter.safetensors"))
    built = modkit.load_model(tmp_path / "out")
    (first, *_) = [m for m in built.modules() if isinstance(m, AdapterLayer)]
    expected = hub["encoder.layer.0.attention.output.adapters.houlsby.adapter_down.0.weight"]
    assert (first.adapter.down.weight - expected).abs().max() < 1e-6
