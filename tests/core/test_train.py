"""Training engine options: device, gradient accumulation, mixed precision, torch.compile."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import modkit
from modkit.builder.training.device import Precision, check_device, resolve_device
from modkit.cli import main
from modkit.errors import SpecError
from specs import tiny_gpt_parts, write_corpus

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt"


def lm_spec(folder: Path, *, steps=10, batch_size=8, lr=3e-4, extra_stage="", extra_top="", seed=5) -> Path:
    """A one-stage clm build without dropout (so micro-batches and processes can agree) or ONNX."""
    if not (folder / "corpus.txt").exists():
        write_corpus(folder, 30_000)
    spec = folder / "spec.toml"
    spec.write_text(f'''
name = "lm"
seed = {seed}
{extra_top}
{tiny_gpt_parts(n_positions=32, extra_backbone="dropout = 0.0")}
[[stages]]
objective = {{ use = "clm" }}
data = "corpus.txt"
steps = {steps}
batch_size = {batch_size}
seq_len = 32
lr = {lr}
{extra_stage}
[export]
onnx = false
''')
    return spec


def build_weights(spec: Path, out: Path, **kw) -> dict[str, torch.Tensor]:
    modkit.build(spec, out, progress=False, echo=lambda _: None, **kw)
    return load_file(str(out / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_accumulated_micro_batches_equal_one_large_batch(tmp_path):
    # At the default lr: Adam divides by sqrt(v), so parameters whose gradient is ~0 in exact
    # arithmetic (key biases, rare embeddings) move by lr times their summation-order noise.
    large = build_weights(lm_spec(tmp_path, batch_size=8), tmp_path / "large")
    micro = build_weights(lm_spec(tmp_path, batch_size=4, extra_stage="accumulate = 2"), tmp_path / "micro")
    four = build_weights(lm_spec(tmp_path, batch_size=2, extra_stage="accumulate = 4"), tmp_path / "four")
    assert max_diff(large, micro) < 1e-6
    assert max_diff(large, four) < 1e-6
    # and the comparison can fail: a different batch gives different weights
    other = build_weights(lm_spec(tmp_path, batch_size=4), tmp_path / "other")
    assert max_diff(large, other) > 1e-4


def test_bf16_autocast_on_cpu_trains_and_keeps_fp32_weights(tmp_path):
    fp32 = build_weights(lm_spec(tmp_path), tmp_path / "fp32")
    bf16 = build_weights(lm_spec(tmp_path, extra_top='precision = "bf16"'), tmp_path / "bf16")
    assert all(v.dtype == torch.float32 for v in bf16.values())
    diff = max_diff(fp32, bf16)
    assert 0 < diff < 0.05  # autocast did act, and training still followed the same path


def test_autocast_dtype_follows_the_precision():
    x = torch.randn(4, 4)
    with Precision(torch.device("cpu"), "bf16").autocast():
        assert (x @ x).dtype == torch.bfloat16
    with Precision(torch.device("cpu"), "fp32").autocast():
        assert (x @ x).dtype == torch.float32
    assert Precision(torch.device("cpu"), "bf16").scaler() is None


def test_fp16_on_cpu_is_a_spec_error_before_any_work(tmp_path):
    spec = lm_spec(tmp_path, extra_top='precision = "fp16"')
    result = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "precision: fp16 needs gradient scaling" in result.output and "bf16" in result.output
    assert not (tmp_path / ".out.work").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, message", [
    ("gpu", "device: String should match pattern"),
    ("cuda:x", "device: String should match pattern"),
])
def test_a_bad_device_names_the_key(tmp_path, value, message):
    spec = lm_spec(tmp_path)
    result = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "out"), "--device", value])
    assert result.exit_code == 2 and message in result.output and str(spec) in result.output


@pytest.mark.machine_dependent
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(SpecError, match="device: cuda:0 requested but torch sees no CUDA GPU"):
        check_device(resolve_device("cuda"), "fp32", "spec.toml")


def test_device_names_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda:3")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_device_flag_cpu_gives_the_weights_of_the_default(tmp_path):
    default = build_weights(lm_spec(tmp_path, steps=3), tmp_path / "a")
    cpu = build_weights(lm_spec(tmp_path, steps=3), tmp_path / "b", device="cpu")
    if not torch.cuda.is_available():
        assert max_diff(default, cpu) == 0.0


@pytest.mark.machine_dependent
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_built_artifact_serves_on_cpu(tmp_path):
    spec = lm_spec(tmp_path, steps=10, extra_top='precision = "bf16"')
    gpu = build_weights(spec, tmp_path / "gpu", device="cuda")
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in gpu.values())
    cpu = build_weights(spec, tmp_path / "cpu", device="cpu")
    assert max_diff(gpu, cpu) < 0.05  # bf16 kernels differ by device; the path is the same
    model = modkit.load_model(tmp_path / "gpu")
    assert next(model.parameters()).device.type == "cpu"


def test_compiled_training_stays_within_fp32_noise_of_eager(tmp_path):
    # Slow the first time on CPU (inductor compiles C++ kernels); cached afterwards.
    eager = build_weights(lm_spec(tmp_path, steps=5), tmp_path / "eager")
    compiled = build_weights(lm_spec(tmp_path, steps=5, extra_top="compile = true"), tmp_path / "compiled")
    assert max_diff(eager, compiled) < 1e-5  # kernels fuse and reorder sums; nothing else differs


def test_metrics_curves_and_evaluation_during_training(tmp_path):
    (tmp_path / "held.txt").write_text((EXAMPLE / "corpus.txt").read_text(encoding="utf-8")[50_000:56_000])
    spec = lm_spec(tmp_path, steps=6, extra_stage='eval_every = 2\neval_examples = 8\neval_data = "held.txt"')
    out = tmp_path / "out"
    manifest = modkit.build(spec, out, progress=False, echo=lambda _: None)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert all(r["stage"] == 1 and r["objective"] == "clm" and r["tokens_per_second"] > 0 and r["lr"] > 0
               for r in lines)
    assert [r["tokens"] for r in lines] == [256 * n for n in range(1, 7)]
    evals = [r for r in lines if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert all(abs(r["eval_perplexity"] - math.exp(r["eval_loss"])) < 1e-6 * r["eval_perplexity"] for r in evals)
    stage = manifest["stages"][0]
    assert stage["eval"] == {k: v for k, v in evals[-1].items() if k.startswith(("eval_", "heldout_"))}
    assert stage["tokens"] == 6 * 256 and stage["train_seconds"] > 0 and 0 < stage["mfu"] < 1
    assert manifest["training"]["matmul_peak_flops"] > 1e8 and manifest["training"]["device"] == "cpu"
    # a language model's held-back figures are its loss on eval_data (8 windows of 32 tokens
    # from held.txt) and that loss's perplexity, nothing beside them
    assert set(stage["eval"]) == {"eval_loss", "eval_perplexity"}
    # curves.png is a PNG; `modkit plot` redraws it (it is not in the manifest's checked files)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curves.png" not in manifest["files"] and "metrics.jsonl" in manifest["files"]
    (out / "curves.png").unlink()
    result = CliRunner().invoke(main, ["plot", str(out)])
    assert result.exit_code == 0 and (out / "curves.png").exists()


def test_the_train_extra_draws_the_curves_and_a_build_without_matplotlib_says_how_to_get_them(
        tmp_path, monkeypatch):
    from modkit.spec import tomllib  # tomli before Python 3.11

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["train"])  # the quick start's install draws them
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: importing it raises ImportError
    said = []
    modkit.build(lm_spec(tmp_path, steps=2), tmp_path / "out", progress=False, echo=said.append)
    assert not (tmp_path / "out" / "curves.png").exists()
    assert ("no curves.png: drawing it needs matplotlib, which modkit[train] installs (pip install 'modkit[plot]'; "
            "then `modkit plot OUT` draws it from OUT/metrics.jsonl)") in said


def test_plot_without_metrics_is_a_user_error(tmp_path):
    result = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and "metrics.jsonl: no such file" in result.output


def test_keep_checkpoints_keeps_the_last_k_and_the_best(tmp_path):
    from modkit.builder.training.kept import KeptCheckpoints

    kept = KeptCheckpoints(tmp_path / "kept", 2)
    model = torch.nn.Linear(2, 2)
    for step, loss in [(2, 3.0), (4, 1.0), (6, 2.0), (8, 2.5)]:
        kept.add(model, 1, step, {"eval_loss": loss})
    assert [r["step"] for r in kept.records] == [4, 6, 8]  # best (4) + last two
    assert sorted(p.name for p in (tmp_path / "kept").glob("*.safetensors")) == [
        "stage1-step000004.safetensors", "stage1-step000006.safetensors", "stage1-step000008.safetensors"]
    assert [r["best"] for r in kept.manifest()] == [True, False, False]
    kept.add(model, 2, 3, {})  # another stage: its own last k, no loss to rank
    assert [(r["stage"], r["step"]) for r in KeptCheckpoints(tmp_path / "kept", 2).records][-1] == (2, 3)


def test_a_build_ships_kept_checkpoints_listed_and_hashed(tmp_path):
    spec = lm_spec(tmp_path, steps=6, extra_stage="eval_every = 2\neval_examples = 8\nkeep_checkpoints = 1")
    manifest = modkit.build(spec, tmp_path / "out", progress=False, echo=lambda _: None)
    files = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert len(files) in (1, 2) and "stage1-step000006.safetensors" in files
    assert [c["file"] for c in manifest["checkpoints"]] == [f"checkpoints/{f}" for f in files]
    assert all(c["file"] in manifest["files"] for c in manifest["checkpoints"])
    best = [c for c in manifest["checkpoints"] if c["best"]]
    assert len(best) == 1 and best[0]["eval_loss"] == min(c["eval_loss"] for c in manifest["checkpoints"])
    last = load_file(str(tmp_path / "out" / "checkpoints" / "stage1-step000006.safetensors"))
    assert max_diff(last, load_file(str(tmp_path / "out" / "model.safetensors"))) == 0.0


def test_an_artifact_with_kept_checkpoints_is_served_and_loaded(tmp_path):
    # the manifest lists checkpoints/… files: every reader of the artifact accepts them
    spec = lm_spec(tmp_path, steps=4, extra_stage="eval_every = 2\neval_examples = 8\nkeep_checkpoints = 1")
    spec.write_text(spec.read_text().replace("onnx = false", "onnx = true"))
    out = tmp_path / "out"
    manifest = modkit.build(spec, out, progress=False, echo=lambda _: None)
    assert "checkpoints/stage1-step000004.safetensors" in manifest["files"]
    r = CliRunner().invoke(main, ["run", str(out), "--text", "The module", "--max-new-tokens", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert 1 <= len(json.loads(r.output)["ids"]) <= 3
    model = modkit.load_model(out)
    assert max_diff(cpu_weights(model), load_file(str(out / "model.safetensors"))) == 0.0
    # a snapshot the manifest does not list is a change after the build
    (out / "checkpoints" / "extra.safetensors").write_bytes(b"")
    r = CliRunner().invoke(main, ["run", str(out), "--text", "x"])
    assert r.exit_code == 2 and "checkpoints/extra.safetensors not listed" in r.output, r.output


def cpu_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("layers, width, length", [(2, 32, 16), (3, 48, 24)])
def test_step_flops_are_the_matrix_products_of_a_training_step(layers, width, length):
    # forward: 2 per weight of every linear layer, the tied LM head over the T-1 predicted
    # positions, and attention's two T x T products; backward twice that (all weights train),
    # plus the scores again where torch's fused attention kernel recomputes them
    from modkit.builder.training.engine import flop_counter

    registry = modkit.get_registry()
    gpt, clm = registry.get("backbone", "gpt"), registry.get("objective", "clm")
    vocab, batch = 300, 3
    backbone = gpt.load()(gpt.options(vocab_size=vocab, d_model=width, n_layers=layers, n_heads=2, n_positions=64))
    objective = clm.load()(clm.options(), backbone, None)
    ids = torch.randint(0, vocab, (batch, length))
    with flop_counter() as counter:
        objective.head.loss(backbone, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})[0].backward()
    flops = counter.get_total_flops()
    linear = sum(m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Linear))
    products = 3 * batch * (2 * linear * length + 2 * width * vocab * (length - 1))
    attention = batch * layers * 2 * length * length * width  # one T x T product
    assert flops - products in (6 * attention, 7 * attention)  # the plain path, the fused kernel


def test_mfu_is_the_counted_flops_of_the_first_step(tmp_path):
    # tiny_gpt_parts: 2 layers of 32, 64 positions, 300 tokens; lm_spec: batch 8 of 32 tokens
    out = tmp_path / "out"
    manifest = modkit.build(lm_spec(tmp_path, steps=3), out, progress=False, echo=lambda _: None)
    model = modkit.load_model(out)
    width, layers, vocab, length = 32, 2, model.backbone.config.vocab_size, 32
    linear = sum(m.weight.numel() for m in model.backbone.modules() if isinstance(m, torch.nn.Linear))
    # without dropout, torch's fused attention kernel: 2 products forward, 5 backward
    per_token = 3 * (2 * linear + 2 * width * vocab * (length - 1) / length) + 7 * layers * 2 * length * width
    peak = manifest["training"]["matmul_peak_flops"]
    for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        assert line["mfu"] == pytest.approx(per_token * line["tokens_per_second"] / peak, rel=1e-3, abs=1e-5)


def test_the_measured_peak_bounds_the_matrix_products_of_this_process():
    # Products of other shapes, each timed alone (the best) and in a run (sustained), with the
    # same threads: none may beat the peak. (A peak from 1024-wide products alone, timed while
    # the machine was busy, measured the process's share of the CPU instead: MFU 130 %.)
    import time

    from modkit.builder.telemetry.peak import measure_matmul_peak

    peak = measure_matmul_peak(torch.device("cpu"))
    for m, k, n in [(384, 384, 384), (128, 768, 512), (768, 96, 768)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        best, began = 0.0, time.perf_counter()
        for _ in range(30):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0))
        sustained = 30 * 2 * m * k * n / (time.perf_counter() - began)
        assert sustained <= best <= 1.05 * peak, (m, k, n, best / 1e9, peak / 1e9)  # 5 %: timer noise


def test_reported_mfu_is_at_most_one_for_a_real_stage(tmp_path):
    manifest = modkit.build(lm_spec(tmp_path, steps=6), tmp_path / "out", progress=False, echo=lambda _: None)
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["mfu"] <= 1 for r in lines) and 0 < manifest["stages"][0]["mfu"] <= 1
    # the peak is the best this machine has shown, kept for the next build
    from modkit.builder.telemetry.peak import cache_key

    cached = json.loads((Path(os.environ["MODKIT_CACHE"]) / "matmul-peak.json").read_text())
    assert manifest["training"]["matmul_peak_flops"] == round(cached[cache_key(torch.device("cpu"), "fp32")])


def test_mfu_divides_by_every_process_peak_and_is_never_above_one():
    from modkit.builder.telemetry.metrics import StageMeter
    from modkit.builder.training.engine import StepRecord

    def record():  # 1000 tokens in a second at 600 FLOPs each: 600 kFLOP/s over all processes
        return StepRecord(step=1, loss=1.0, lr=1e-3, tokens=1000, seconds=1.0, flops_per_token=600)

    one, two = (StageMeter(1, "clm", 100, 1e6, None, processes=n) for n in (1, 2))
    assert one(record())["mfu"] == pytest.approx(0.6) and two(record())["mfu"] == pytest.approx(0.3)
    assert one.mfu_text() == "MFU 60.0%"
    # a peak the model outruns was measured low: no MFU from then on, and the build says why
    low = StageMeter(1, "clm", 100, 5e5, None)
    assert low(record())["mfu"] is None and low.summary()["mfu"] is None and low.running_mfu() is None
    assert low.mfu_text().startswith("no MFU: the model outran the measured matmul peak (0.0 GFLOP/s a process)")

