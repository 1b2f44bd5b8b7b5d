"""A third-party PEFT method (examples/plugin-ia3): the conformance kit on every family, Hugging
Face PEFT's IA3 outputs on the same BERT and vectors, and builds that compose it with LoRA."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import transformers
from conftest import import_or_skip
from peft_models import FAMILIES, inputs, tiny_backbone
from specs import tiny_gpt_parts, write_corpus

import modkit
from modkit.errors import SpecError
from modkit.runtime import Runtime
from modkit.testing import check_peft

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def ia3():
    import_or_skip("modkit_ia3", "pip install -e examples/plugin-ia3")
    return modkit.get_registry().get("peft", "ia3")


@pytest.mark.parametrize("family", FAMILIES)
def test_ia3_meets_the_peft_contract(ia3, family):
    targets = ["attn.k", "attn.v", "ffn.down"] + (["cross.k", "cross.v"] if family in ("bart", "t5") else [])
    check_peft(ia3.load()(ia3.options(targets=targets)), tiny_backbone(family, seed=2))


@pytest.mark.parametrize("seed", [0, 1])
def test_ia3_gives_peft_ia3_outputs_on_the_same_bert(ia3, tmp_path, seed):
    from peft import IA3Config, get_peft_model

    torch.manual_seed(seed)
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32)).eval()
    hf.save_pretrained(tmp_path / "base", safe_serialization=True)
    ours = modkit.load_model(tmp_path / "base").eval()
    method = ia3.load()(ia3.options())
    method.apply(ours)
    vectors = {}  # (layer, role) -> a random vector, set in both models
    for name, module in ours.named_modules():
        if hasattr(module, "ia3") and hasattr(module, "modkit_role"):
            layer = int(re.search(r"blocks\.(\d+)\.", name).group(1))
            with torch.no_grad():
                module.ia3.scale.copy_(1 + 0.5 * torch.randn_like(module.ia3.scale))
            vectors[layer, module.modkit_role] = module.ia3.scale.detach()
    theirs = get_peft_model(hf, IA3Config(target_modules=r".*layer\.\d+\.(attention\.self\.(key|value)|output\.dense)",
                                          feedforward_modules=r".*layer\.\d+\.output\.dense")).eval()
    hf_roles = {"attention.self.key": "attn.k", "attention.self.value": "attn.v", "output.dense": "ffn.down"}
    set_ = 0
    for name, module in theirs.named_modules():
        if hasattr(module, "ia3_l") and isinstance(module.ia3_l, torch.nn.ParameterDict):
            layer, hf_name = re.search(r"layer\.(\d+)\.(.+)$", name).groups()
            with torch.no_grad():
                param = module.ia3_l["default"]
                param.copy_(vectors[int(layer), hf_roles[hf_name]].reshape(param.shape))
            set_ += 1
    assert set_ == len(vectors) == 6
    batch = inputs(ours, seed=seed)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = theirs(**batch).last_hidden_state[real]
        got = ours(**batch).last_hidden_state[real]
        assert (got - expected).abs().max() < 1e-5
        method.merge(ours)
        assert not any(hasattr(m, "ia3") for m in ours.modules())
        assert (ours(**batch).last_hidden_state[real] - expected).abs().max() < 1e-5


def spec_text(peft: str, merge: bool) -> str:
    rows = (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines()
    labels = sorted({json.loads(r)["label"] for r in rows})
    return f'''
name = "ia3"
seed = 1
{tiny_gpt_parts()}
[[stages]]
objective = {{ use = "classify", labels = {json.dumps(labels)} }}
peft = {peft}
data = "modules.jsonl"
steps = 4
batch_size = 4
seq_len = 48
lr = 3e-2
[export]
merge = {str(merge).lower()}
'''


LORA = '{ use = "lora", r = 2, targets = ["attn.q", "attn.v"] }'


@pytest.mark.parametrize("peft, merge, kept", [
    (f'[{LORA}, {{ use = "ia3" }}]', True, {"lora": False, "ia3": False}),  # lora merges first, then ia3 folds
    (f'[{{ use = "ia3" }}, {LORA}]', False, {"ia3": True, "lora": True}),  # lora inside ia3: both stay
])
def test_ia3_with_lora_builds_exports_and_reloads(ia3, tmp_path, peft, merge, kept):
    write_corpus(tmp_path, 20_000)
    (tmp_path / "modules.jsonl").write_text((EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text())
    (tmp_path / "spec.toml").write_text(spec_text(peft, merge))
    m = modkit.build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda _: None)
    assert {p["name"]: p["kept"] for p in m["components"]["stages"][0]["peft"]} == kept
    model, tok = modkit.load_model(tmp_path / "out"), modkit.load_tokenizer(tmp_path / "out")
    text = "Create a socket and connect it to a remote address."
    served = Runtime(tmp_path / "out").run([text])[0]["probabilities"]
    layout_ids = tok.encode(text) + [tok.special_id("eos")]  # classify's extract token on a GPT
    with torch.no_grad():
        ids = torch.tensor([layout_ids])
        probs = model(ids, torch.ones_like(ids)).logits.softmax(-1)[0]
    assert list(served.values()) == pytest.approx(probs.tolist(), abs=1e-5)


def test_ia3_listed_before_lora_on_one_layer_cannot_merge_and_says_so_before_training(ia3, tmp_path):
    write_corpus(tmp_path, 20_000)
    (tmp_path / "modules.jsonl").write_text((EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text())
    (tmp_path / "spec.toml").write_text(spec_text(f'[{{ use = "ia3" }}, {LORA}]', True).replace("steps = 4", "steps = 999999"))
    with pytest.raises(SpecError, match=r"stages\[0\]\.peft\[0\]: ia3: cannot merge into attn.v, which also has a "
                                        r"LoRALinear inside"):
        modkit.build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda _: None)
    assert not (tmp_path / "out").exists()
