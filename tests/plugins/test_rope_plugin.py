"""A third-party backbone with its own attention layers and rotary positions (examples/plugin-rope)
meets the cache and export contract: it builds, exports a cached step, and `modkit run` generates
through onnxruntime exactly the tokens torch's greedy search gives."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import modkit
from conftest import import_or_skip
from modkit.builder.assembly import load_torch_model
from modkit.nn.blocks import Attention, attention_bias
from modkit.nn.generation import generate
from modkit.runtime import Runtime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def rope():
    return import_or_skip("modkit_rope.model", "pip install -e examples/plugin-rope")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_core_attention_with_the_plugins_rotary_slot_equals_the_plugins_own_attention(rope, seed):
    torch.manual_seed(seed)
    d, heads = 32, 4
    theirs = rope.RopeAttention(d, heads, rope.Rotary(d // heads)).eval()
    ours = Attention(d, heads, positions=rope.Rotary(d // heads)).eval()
    ours.load_state_dict(theirs.state_dict())
    x, extra = torch.randn(2, 7, d), torch.randn(2, 3, d)
    with torch.no_grad():
        bias = attention_bias(None, 7, 7, causal=True, dtype=x.dtype, device=x.device)
        want, cache = theirs(x, bias, torch.arange(7)[None], None)
        got, _, our_cache = ours(x, causal=True, use_cache=True)
        torch.testing.assert_close(got, want)
        # three more tokens on top of the cache: positions continue at 7
        bias = attention_bias(None, 3, 10, causal=True, dtype=x.dtype, device=x.device)
        want, _ = theirs(extra, bias, torch.arange(7, 10)[None], cache)
        got, _, _ = ours(extra, causal=True, past=our_cache)
    torch.testing.assert_close(got, want)


def test_a_rotary_decoder_builds_exports_a_cache_and_generates_like_torch(rope, tmp_path):
    text = "\n".join(json.loads(r)["text"] for r in (EXAMPLES / "tiny-gpt" / "modules.jsonl").read_text().splitlines())
    (tmp_path / "corpus.txt").write_text(text)
    (tmp_path / "spec.toml").write_text('''
name = "rope"
[tokenizer]
use = "bpe"
vocab_size = 300
train_on = "corpus.txt"
[backbone]
use = "rope-decoder"
d_model = 32
n_layers = 2
n_heads = 4
[[stages]]
objective = { use = "clm" }
data = "corpus.txt"
steps = 30
batch_size = 8
seq_len = 32
''')
    manifest = modkit.build(tmp_path / "spec.toml", tmp_path / "out", progress=False, echo=lambda _: None)
    assert manifest["graphs"] == ["model.onnx", "model_with_past.onnx"]
    assert manifest["parity"]["with_past_greedy_tokens_equal"] and manifest["parity"]["max_abs_diff"] < 1e-4
    model = load_torch_model(tmp_path / "out")
    tokenizer = modkit.load_tokenizer(tmp_path / "out")
    runtime = Runtime(tmp_path / "out")
    eos = tokenizer.special_id("eos")
    for prompt in ["The socket module", "Create a parser", "x"]:
        ids = tokenizer.encode(prompt)

        def step(tokens, cache):
            seen = 0 if cache is None else cache[0][0][0].shape[2]
            out = model.backbone(tokens, torch.ones(1, seen + tokens.shape[1], dtype=torch.long),
                                 past_key_values=cache, use_cache=True)
            return model.backbone.lm_logits(out.last_hidden_state[:, -1]), out.past_key_values

        with torch.no_grad():
            want = generate(step, torch.tensor([ids]), max_new_tokens=12, eos_token_id=eos)[0].tolist()
        want = want[: want.index(eos)] if eos in want else want
        [result] = runtime.run([prompt], max_new_tokens=12)
        assert result["ids"] == want


def test_a_third_party_backbone_that_declares_inputs_embeds_takes_prompt_tuning(rope):
    """It declares its capabilities (no position table, position_ids, inputs_embeds, its token
    embedding, its layer class) and the kit holds it to them; the core's input slot then gives
    it prompt tuning: its cached steps, and its cached ONNX graph, carry the virtual tokens."""
    from modkit.testing import check_backbone, check_peft
    from modkit_plugins.peft.prompt import PromptOptions
    from modkit_plugins.peft.prompt_impl import PromptTuning
    from modkit_rope import RopeOptions

    torch.manual_seed(0)
    backbone = rope.RopeDecoder(RopeOptions(vocab_size=50, d_model=32, n_layers=2, n_heads=4))
    check_backbone(backbone)
    check_peft(PromptTuning(PromptOptions(num_virtual_tokens=3)), backbone)
