"""`modkit cost`: the lecture's Strubell et al. (2019) rows, FLOP counts checked against the
models' own parameters on random shapes, PEFT and encoder-decoder stages, artifacts, profiles."""
from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import modkit
from modkit.cli import main
from modkit_plugins.analysis.cost_model import StageTokens, stage_flops
from modkit_plugins.analysis.cost_plan import shape_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from test_build import quiet_build, tiny_spec  # noqa: E402

#: Strubell et al. (2019), Table 3: hardware, measured power (W), hours, kWh·PUE, CO2e (lb)
STRUBELL = {
    "T2T base": ("P100x8", 1415.78, 12, 27, 26),
    "T2T big": ("P100x8", 1515.43, 84, 201, 192),
    "ELMo": ("P100x3", 517.66, 336, 275, 262),
    "BERT base": ("V100x64", 12041.51, 79, 1507, 1438),
}


def cost(*args: str) -> dict:
    result = CliRunner().invoke(main, ["cost", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("row", sorted(STRUBELL))
def test_strubell_energy_and_co2_within_2_percent(row):
    hardware, power, hours, kwh, lb = STRUBELL[row]
    r = cost("--hardware", hardware, "--hours", str(hours), "--power", str(power))
    assert r["kwh_pue"] == pytest.approx(kwh, rel=0.02)
    assert r["co2e_lb"] == pytest.approx(lb, rel=0.02)
    assert r["co2e_kg"] == pytest.approx(lb * 0.45359237, rel=0.02)


def test_v100_profile_alone_reproduces_bert_base():
    r = cost("--hardware", "V100x64", "--hours", "79")
    assert r["kwh_pue"] == pytest.approx(1507, rel=0.02) and r["co2e_lb"] == pytest.approx(1438, rel=0.02)


@pytest.mark.parametrize("hardware, hours, low, high", [
    ("TPUv2x16", 96, 2074, 6912),  # BERT base
    ("TPUv3x32", 168, 12902, 43008),  # GPT-2
    ("V100x64", 79, 3751, 12571),  # BERT base
    ("P100x8", 12, 41, 140),  # T2T base
    ("P100x8", 84, 289, 981),  # T2T big
    ("P100x3", 336, 433, 1472),  # ELMo
])
def test_price_range_contains_the_tables(hardware, hours, low, high):
    r = cost("--hardware", hardware, "--hours", str(hours))
    assert round(r["price_usd_low"]) <= low and round(r["price_usd_high"]) >= high  # the table is in dollars


def test_co2_rate_and_pue_are_configurable():
    r = cost("--hardware", "A100x2", "--hours", "10", "--pue", "1.1", "--co2-per-kwh", "0.5")
    assert r["kwh_pue"] == pytest.approx(2 * 400 * 10 * 1.1 / 1000)
    assert r["co2e_lb"] == pytest.approx(r["kwh_pue"] * 0.5)


def _random_gpt(rng):
    from modkit_plugins.backbones.gpt import GPTOptions
    from modkit_plugins.backbones.gpt_model import GPT

    heads = rng.choice([1, 2, 4])
    return GPT(GPTOptions(vocab_size=rng.randint(50, 300), d_model=heads * rng.choice([8, 16]),
                          n_layers=rng.randint(1, 3), n_heads=heads, n_positions=64))


@pytest.mark.parametrize("seed", range(3))
def test_full_training_is_6nd_plus_attention(seed):
    rng = random.Random(seed)
    model = _random_gpt(rng)
    shape = shape_of(model)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert shape.weights == {"encoder": linear}
    seqs, t = rng.randint(1, 100), rng.randint(2, 64)
    n = linear + model.d_model * model.vocab_size  # plus the (tied) output layer
    attn = 4 * t * model.d_model * len(model.blocks)
    f = stage_flops(shape, StageTokens(sequences=seqs, source_len=t))
    assert f["total"] == pytest.approx(seqs * t * (6 * n + 3 * attn))
    assert f["forward"] == pytest.approx(seqs * t * (2 * n + attn))


def test_frozen_weights_get_no_weight_gradient():
    model = _random_gpt(random.Random(7))
    shape = shape_of(model)
    full = stage_flops(shape, StageTokens(sequences=10, source_len=16))
    peft = stage_flops(shape, StageTokens(sequences=10, source_len=16, peft_weights={"encoder": 100}))
    assert peft["weight_grad"] == 2 * 100 * 160
    assert peft["forward"] == pytest.approx(full["forward"] + 2 * 100 * 160)
    assert peft["total"] < full["total"] * 0.75


def test_encoder_decoder_counts_source_and_target_streams():
    from modkit_plugins.backbones.t5 import T5Options
    from modkit_plugins.backbones.t5_model import T5

    model = T5(T5Options(vocab_size=100, d_model=16, d_kv=8, d_ff=32, n_heads=2, encoder_layers=2,
                         decoder_layers=1))
    shape = shape_of(model)
    enc = sum(m.weight.numel() for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and n.startswith("encoder"))
    assert shape.weights["encoder"] == enc and shape.encoder_decoder
    assert len(shape.cross_attention) == 1 and len(shape.self_attention["encoder"]) == 2
    src, tgt = 20, 5
    f = stage_flops(shape, StageTokens(sequences=1, source_len=src, target_len=tgt))
    attn_enc, attn_dec = 2 * 4 * src * 16, 4 * tgt * 16 + 4 * src * 16
    expected = src * (2 * enc + attn_enc) + tgt * (2 * (shape.weights["decoder"] + 16 * 100) + attn_dec)
    assert f["forward"] == pytest.approx(expected)


def test_spec_with_a_lora_stage(tmp_path):
    spec = tiny_spec(tmp_path)
    r = cost(str(spec), "--hardware", "cpux2")
    pre, lora = r["stages"]
    d, layers, r_, targets = 32, 2, 4, 2
    lora_weights = layers * targets * r_ * (d + d)
    assert lora["stage"] == "classify+lora"
    assert lora["weight_grad"] == pytest.approx(2 * lora_weights * 8 * 4 * 48)
    assert pre["weight_grad"] > 0 and r["flops"] == pytest.approx(pre["total"] + lora["total"])
    assert r["hours_source"].startswith("FLOPs at 40%")


def test_memory_plan_of_a_spec_under_ddp_and_fsdp(tmp_path):
    from modkit_plugins.analysis.cost_memory import StageMemory, activation_bytes

    spec = tiny_spec(tmp_path)
    r = cost(str(spec), "--hardware", "cpux2", "--memory")
    pre, lora = r["memory"]
    assert (pre["stage"], pre["devices"], pre["sequences_per_device"]) == ("clm", 2, 2)
    # the weights the build makes: the same backbone, really built
    comp = modkit.get_registry().get("backbone", "gpt")
    torch.manual_seed(0)
    backbone = comp.load()(comp.options(vocab_size=300, d_model=32, n_layers=2, n_heads=2,
                                        n_positions=64))
    n = sum(p.numel() for p in backbone.parameters())
    assert pre["ddp"]["weights"] == 4 * n and pre["ddp"]["optimizer_state"] == 8 * n
    assert pre["fsdp"]["weights"] == 4 * math.ceil(n / 2) and pre["fsdp"]["gradients"] == pre["fsdp"]["weights"]
    assert lora["ddp"]["gradients"] == 4 * 2 * 2 * 4 * (32 + 32)  # the LoRA weights only
    # activations counted on the meta device are the bytes a real forward keeps beside the
    # weights (a product saves its weight, or a view of it: the weights' own memory)
    kept, stored = [], {p.untyped_storage().data_ptr() for p in backbone.parameters()}

    def pack(t):
        if t.untyped_storage().data_ptr() not in stored:
            kept.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden = backbone.train()(torch.zeros(2, 32, dtype=torch.long)).last_hidden_state
        logits = backbone.lm_logits(hidden)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.zeros(2 * 32, dtype=torch.long))
    assert pre["ddp"]["activations"] == pre["fsdp"]["activations"] == sum(kept)
    assert activation_bytes(backbone.to("meta"), 2, StageMemory("clm", n, n, 4, 32)) == sum(kept)


def test_a_decoder_only_model_is_not_called_an_encoder(tmp_path):
    result = CliRunner().invoke(main, ["cost", str(tiny_spec(tmp_path)), "--hardware", "cpux2"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "model     tiny: matmul weights 0.0246 M"
    t5 = CliRunner().invoke(main, ["cost", "t5-small", "--tokens", "1e6"])
    assert t5.exit_code == 0, t5.output
    assert t5.output.splitlines()[0] == "model     t5-small: matmul weights encoder 18.9 M, decoder 25.2 M"


def test_artifact_records_and_reports_measured_resources(tmp_path):
    out = tmp_path / "out"
    quiet_build(tiny_spec(tmp_path, steps=(2, 2)), out)
    measured = json.loads((out / "manifest.json").read_text())["resources"]
    assert measured["wall_seconds"] > 0 and measured["cpu_seconds"] > 0
    assert set(measured) >= {"energy_kwh", "energy_source", "cpu_count", "gpu_count"}
    r = cost(str(out))
    assert r["hours"] == pytest.approx(measured["wall_seconds"] / 3600) and r["hours_source"] == "measured"
    if measured["energy_kwh"] is None:  # no RAPL/NVML here: the cpu profile's estimate
        assert r["power_source"] == "profile" and r["kwh_pue"] == pytest.approx(
            r["power_w"] * r["hours"] * 1.58 / 1000)
    assert len(r["stages"]) == 2


def test_user_profiles_extend_and_override(tmp_path):
    extra = tmp_path / "hw.toml"
    extra.write_text('[MyChip]\npower_w = 100\npeak_tflops = 10\nprice_usd_hour = [1, 2]\n'
                     '[V100]\npower_w = 300\npeak_tflops = 125\nprice_usd_hour = [1, 3]\n')
    r = cost("--hardware", "mychipx3", "--hours", "2", "--profiles", str(extra))
    assert r["kwh_pue"] == pytest.approx(3 * 100 * 2 * 1.58 / 1000) and r["price_usd_high"] == 12
    assert cost("--hardware", "V100", "--hours", "1", "--profiles", str(extra))["power_w"] == 300


@pytest.mark.parametrize("args, message", [
    (["--hardware", "Z80", "--hours", "1"], "unknown profile 'Z80'"),
    (["--hardware", "V100"], "give --hours"),
    (["no-such-preset-or-file"], "neither a spec file nor an artifact"),
])
def test_user_errors_exit_2(args, message):
    result = CliRunner().invoke(main, ["cost", *args])
    assert result.exit_code == 2 and message in result.output


def test_broken_profile_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[X]\npower_w = 1\n")
    result = CliRunner().invoke(main, ["cost", "--hardware", "X", "--hours", "1", "--profiles", str(bad)])
    assert result.exit_code == 2 and str(bad) in result.output and "[X]" in result.output
