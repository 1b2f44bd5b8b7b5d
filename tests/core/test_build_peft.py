"""PEFT methods and their combinations through `modkit build` on every family: parity-checked
ONNX, the manifest's per-method figures, load_model rebuilding the artifact, `modkit run`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import modkit
from modkit.cli import main
from modkit.errors import SpecError
from modkit.runtime import Runtime
from modkit.runtime.artifact import read_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LABELS = ["argparse", "datetime", "socket", "sqlite3", "unittest"]

_BACKBONES = {
    "gpt": "d_model = 32\nn_layers = 2\nn_heads = 2\nn_positions = 64",
    "bert": "d_model = 32\nn_layers = 2\nn_heads = 2\nn_positions = 64",
    "bart": "d_model = 32\nencoder_layers = 2\ndecoder_layers = 2\nn_heads = 2\nd_ff = 64\nn_positions = 64",
    "t5": "d_model = 32\nd_kv = 8\nencoder_layers = 2\ndecoder_layers = 2\nn_heads = 2\nd_ff = 64",
}


def write_spec(folder: Path, family: str, peft: str, *, stages: int = 1, merge: bool = True) -> Path:
    """A tiny spec of ``family`` whose last stage uses ``peft`` (a TOML list); with
    ``stages=2`` an earlier stage trains the same objective with the same methods."""
    if family in ("bart", "t5"):
        rows = (EXAMPLES / "tiny-t5" / "data" / "train.jsonl").read_text().splitlines()[:60]
        corpus = "\n".join(json.loads(r)["target"] for r in rows)
        objective, tok = '{ use = "seq2seq", max_new_tokens = 6, eval_examples = 4 }', "bpe"
    else:
        rows = (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines()[:60]
        corpus = (EXAMPLES / "tiny-gpt" / "corpus.txt").read_text()[:20_000]
        objective = ('{ use = "clm" }' if family == "gpt"
                     else f'{{ use = "classify", labels = {json.dumps(LABELS)} }}')
        tok = "bpe" if family == "gpt" else "wordpiece"
    (folder / "data.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "corpus.txt").write_text(corpus)
    data = "corpus.txt" if family == "gpt" else "data.jsonl"
    stage = f'''
[[stages]]
objective = {objective}
peft = {peft}
data = "{data}"
steps = 3
batch_size = 4
seq_len = 24
'''
    spec = folder / "spec.toml"
    spec.write_text(f'''
name = "peft-{family}"
seed = 1
[tokenizer]
use = "{tok}"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
use = "{family}"
{_BACKBONES[family]}
{stage * stages}
[export]
merge = {str(merge).lower()}
''')
    return spec


def quiet_build(spec, out):
    return modkit.build(spec, out, progress=False, echo=lambda _: None)


def check_served(out: Path, family: str) -> None:
    """`modkit run` serves the artifact; for classification its labels are torch's."""
    r = CliRunner().invoke(main, ["run", str(out), "--text", "The socket module", "--json"])
    assert r.exit_code == 0, r.output
    if family == "bert":
        m = read_manifest(out)
        model, tok = modkit.load_model(out), modkit.load_tokenizer(out)
        texts = ["The socket module", "Return a date", "Run the tests in a case"]
        ids = [tok.encode_plus(t, max_length=24).ids for t in texts]
        torch_labels = [m["task"]["labels"][int(model(torch.tensor([i]), torch.ones(1, len(i), dtype=torch.long))
                                               .logits.argmax())] for i in ids]
        assert [x["label"] for x in Runtime(out).run(texts)] == torch_labels


ADAPTER = '[{ use = "adapter", bottleneck = 4 }]'


@pytest.mark.parametrize("family", ["gpt", "bert", "bart", "t5"])
def test_adapter_builds_exports_and_serves(tmp_path, family):
    quiet_build(write_spec(tmp_path, family, ADAPTER), tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    assert m["parity"]["max_abs_diff"] < 1e-4
    (record,) = m["components"]["stages"][0]["peft"]
    assert record["kept"] and record["merged"]  # adapters stay in the merged model
    (figures,) = m["stages"][0]["peft_parameters"]
    d, bottleneck = 32, 4
    n_sites = {"gpt": 4, "bert": 4, "bart": 8, "t5": 8}[family]  # attn.o + ffn.down per layer
    assert figures["trainable_parameters"] == n_sites * (2 * d * bottleneck + d + bottleneck)
    assert figures["fraction"] == figures["trainable_parameters"] / m["stages"][0]["total_parameters"]
    check_served(tmp_path / "out", family)


def test_a_clash_between_methods_is_a_spec_error_before_training(tmp_path):
    # the second stage adds adapters to layers that keep the first stage's; the first stage is
    # too long to finish, so passing means the clash was found before any training
    spec = write_spec(tmp_path, "gpt", ADAPTER, stages=2)
    spec.write_text(spec.read_text().replace("steps = 3", "steps = 999999", 1))
    with pytest.raises(SpecError, match=r"stages\[1\]\.peft\[0\]: adapter: attn.o already has an adapter"):
        quiet_build(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


PREFIX = '[{ use = "prefix", length = 3, projection = 8 }]'
ALL_THREE = ('[{ use = "lora", r = 2, targets = ["attn.q", "attn.v", "attn.o"] }, '
             '{ use = "adapter", bottleneck = 4 }, { use = "prefix", length = 3 }]')


def check_onnx_batches(out: Path) -> None:
    """model.onnx agrees with the rebuilt torch model at batch sizes other than the traced one."""
    from modkit.runtime import make_session

    model = modkit.load_model(out)
    session = make_session(out / "model.onnx", "cpu")
    for batch in (1, 5):
        ids = torch.randint(3, 200, (batch, 7))
        mask = torch.ones_like(ids)
        mask[0, 5:] = 0
        got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        expected = model(ids, mask).logits.detach().numpy()
        diff = abs(got - expected)
        diff = diff[mask.numpy().astype(bool)] if diff.ndim == 3 else diff
        assert diff.max() < 1e-4


@pytest.mark.parametrize("family", ["gpt", "bert", "bart", "t5"])
@pytest.mark.parametrize("peft", [PREFIX, ALL_THREE], ids=["prefix", "lora+adapter+prefix"])
def test_prefix_and_all_three_build_export_and_serve(tmp_path, family, peft):
    quiet_build(write_spec(tmp_path, family, peft), tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    assert m["parity"]["max_abs_diff"] < 1e-4
    if family == "gpt":  # cached generation with prefixes gives torch's greedy tokens
        assert m["parity"]["with_past_greedy_tokens_equal"]
    if family in ("bart", "t5"):
        assert m["parity"]["greedy_tokens_equal"]
    else:
        check_onnx_batches(tmp_path / "out")
    records = {r["name"]: r for r in m["components"]["stages"][0]["peft"]}
    assert records["prefix"]["kept"] and records["prefix"]["merged"]  # constants in the artifact
    if "lora" in records:
        assert not records["lora"]["kept"]  # folded into the base weights
    figures = {f["name"]: f for f in m["stages"][0]["peft_parameters"]}
    assert set(figures) == set(records)
    kv = 2 * 2 * (16 if family == "t5" else 32)  # 2 layers x (key, value) x heads * head size
    assert figures["prefix"]["trainable_parameters"] == (3 * 32 + 32 * 8 + 8 + (8 + 1) * kv
                                                          if peft == PREFIX else 3 * kv)
    assert sum(f["trainable_parameters"] for f in figures.values()) <= m["stages"][0]["trainable_parameters"]
    check_served(tmp_path / "out", family)


def test_an_unmerged_prefix_artifact_keeps_its_encoder(tmp_path):
    quiet_build(write_spec(tmp_path, "bert", PREFIX, merge=False), tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    (record,) = m["components"]["stages"][0]["peft"]
    assert record["kept"] and not record["merged"]
    assert any("prefix_encoder.transform" in k for k in modkit.load_model(tmp_path / "out").state_dict())
    check_served(tmp_path / "out", "bert")
    # export-hf writes the base and says what it left out; export-peft names the alternative
    r = CliRunner().invoke(main, ["export-hf", str(tmp_path / "out"), str(tmp_path / "hf")])
    assert r.exit_code == 0 and "PEFT modules that did not merge" in r.output, r.output
    r = CliRunner().invoke(main, ["export-peft", str(tmp_path / "out"), str(tmp_path / "peft")])
    assert r.exit_code == 2 and "shifts every token's position" in r.output
    assert 'Train with positions = "peft" for export-peft, use `lora`' in r.output


def test_a_later_stage_adds_methods_on_top_of_merged_ones(tmp_path):
    # stage 1: LoRA on attn.q/v + prefix; stage 2: LoRA again on the same layers + adapters
    spec = write_spec(tmp_path, "bert", '[{ use = "lora", r = 2 }, { use = "prefix", length = 2 }]', stages=2)
    text = spec.read_text()
    first = text.index("peft = ")
    second = text.index("peft = ", first + 1)
    spec.write_text(text[:second] + text[second:].replace(
        text[second:].splitlines()[0], 'peft = [{ use = "lora", r = 2 }, { use = "adapter", bottleneck = 4 }]', 1))
    quiet_build(spec, tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    stages = m["components"]["stages"]
    assert [r["name"] for r in stages[0]["peft"]] == ["lora", "prefix"]
    assert [(r["kept"], r["merged"]) for r in stages[0]["peft"]] == [(False, True), (True, True)]
    assert [r["name"] for r in stages[1]["peft"]] == ["lora", "adapter"]
    check_served(tmp_path / "out", "bert")


def test_a_built_prefix_goes_out_through_export_hf_and_export_peft(tmp_path):
    """CLI round trip: the built (merged, constant) prefix as a PEFT folder over the export-hf base."""
    import transformers
    from peft import PeftModel

    spec = write_spec(tmp_path, "gpt", '[{ use = "prefix", length = 3, projection = 8, positions = "peft" }]')
    quiet_build(spec, tmp_path / "out")
    for command in (["export-hf", "out", "back"], ["export-peft", "out", "peft"]):
        r = CliRunner().invoke(main, [command[0], str(tmp_path / command[1]), str(tmp_path / command[2])])
        assert r.exit_code == 0, r.output
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    theirs = PeftModel.from_pretrained(hf, tmp_path / "peft" / "prefix").eval()
    ours = modkit.load_model(tmp_path / "out")
    ids = torch.tensor([[5, 9, 23, 41, 7, 12]])
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        plain = hf(input_ids=ids).logits
        got = ours(ids, torch.ones_like(ids)).logits
    assert (expected - plain).abs().max() > 1e-3
    assert (got - expected).abs().max() < 1e-5
