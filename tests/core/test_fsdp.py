"""strategy = "fsdp": FSDP2 over 2 gloo processes equals one process, for a full-weight, a LoRA
and a multi-objective stage; its distributed checkpoints resume at another world size (2 -> 1,
1 -> 2); the manifest records each process's peak memory."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

from modkit.errors import UserError
from specs import write_tiny_bert_spec
from test_ddp import cli_build
from test_train import build_weights, lm_spec, max_diff

LORA = 'peft = [{ use = "lora", r = 2, targets = ["attn.q", "attn.v"] }]'
FSDP = ['strategy="fsdp"']


def test_fsdp_over_two_processes_equals_one_process(tmp_path):
    spec = lm_spec(tmp_path, steps=6, batch_size=8)
    one = build_weights(spec, tmp_path / "one")
    # with activation checkpointing inside the FSDP units, which changes nothing but memory
    done = cli_build(spec, tmp_path / "two", "--nproc", "2", "--strategy", "fsdp",
                     "--set", "stages[0].activation_checkpointing=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_diff(one, load_file(str(tmp_path / "two" / "model.safetensors"))) < 1e-5
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert (manifest["training"]["processes"], manifest["training"]["strategy"]) == (2, "fsdp")
    # each process measured its own peak, and rank 0 recorded both
    peaks = manifest["stages"][0]["peak_memory"]
    assert [p["rank"] for p in peaks] == [0, 1] and all(p["device"] == "cpu" for p in peaks)
    assert all(p["peak_rss_bytes"] >= p["start_rss_bytes"] > 0 for p in peaks)
    # and one process under FSDP (a process group of one) trains the same weights
    assert max_diff(one, build_weights(spec, tmp_path / "alone", overrides=FSDP)) < 1e-5
    [alone] = json.loads((tmp_path / "alone" / "manifest.json").read_text())["stages"][0]["peak_memory"]
    assert alone["rank"] == 0 and alone["peak_rss_bytes"] > 0


def test_a_lora_stage_shards_the_frozen_base_and_merges_after_gathering(tmp_path):
    spec = lm_spec(tmp_path, steps=6, batch_size=8, lr=3e-3, extra_stage=LORA)
    one = build_weights(spec, tmp_path / "one")
    done = cli_build(spec, tmp_path / "two", "--nproc", "2", "--strategy", "fsdp")
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert not any("lora" in k for k in two)  # merged into the base weights
    assert max_diff(one, two) < 1e-5
    untrained = build_weights(lm_spec(tmp_path, steps=0, extra_stage=LORA), tmp_path / "untrained")
    assert max_diff(untrained, two) > 1e-4  # the adapters trained, and merged


def test_an_mlm_and_nsp_stage_under_two_fsdp_processes_equals_one_process(tmp_path):
    # The objectives' heads (NSP's pooler and classifier; BERT's MLM head is the backbone's) are
    # in the root unit, sharded like the embeddings, and trained: 20 steps, heads included.
    spec = write_tiny_bert_spec(tmp_path, '[{ use = "mlm" }, { use = "nsp", weight = 0.5 }]',
                                "[export]\nonnx = false")
    spec.write_text(spec.read_text().replace("steps = 6", "steps = 20"))
    one = build_weights(spec, tmp_path / "one", overrides=["stages[0].batch_size=4", "stages[0].accumulate=2"])
    done = cli_build(spec, tmp_path / "two", "--nproc", "2", "--strategy", "fsdp")
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    heads = [k for k in two if k.startswith("objectives.nsp.")]
    assert heads and max_diff({k: one[k] for k in heads}, {k: two[k] for k in heads}) < 1e-5
    assert max_diff(one, two) < 1e-5
    untrained = build_weights(spec, tmp_path / "untrained", overrides=["stages[0].steps=0"])
    assert max_diff({k: untrained[k] for k in heads}, {k: two[k] for k in heads}) > 1e-4  # the heads trained
    stages = [json.loads((tmp_path / name / "manifest.json").read_text())["stages"][0] for name in ("one", "two")]
    for name in ("mlm", "nsp"):
        assert abs(stages[0]["losses"][name]["loss_last_10"] - stages[1]["losses"][name]["loss_last_10"]) < 1e-5


CRASHING = '''
import sys
import modkit.builder.build as build_module

real = build_module.train_stage

def crashing(*args, on_step, **kw):
    def boom(record):
        on_step(record)
        if record.step == 4:
            raise SystemExit(3)
    return real(*args, on_step=boom, **kw)

build_module.train_stage = crashing
build_module.build(sys.argv[1], sys.argv[2], overrides=['strategy="fsdp"'], progress=False)
'''


def test_a_checkpoint_of_two_fsdp_processes_resumes_in_one(tmp_path):
    spec = lm_spec(tmp_path, steps=6, batch_size=8, extra_stage="checkpoint_every = 3")
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASHING))
    out, work = tmp_path / "out", tmp_path / ".out.work"
    crashed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                              str(script), str(spec), str(out)], capture_output=True, text=True, timeout=900)
    assert crashed.returncode != 0 and not out.exists()
    position = json.loads((work / "checkpoint.json").read_text())
    assert (position["step"], position["dcp"]) == (3, "checkpoint-0-3.dcp")
    assert (work / "checkpoint-0-3.dcp" / ".metadata").exists()
    resumed = build_weights(spec, out, resume=True, overrides=FSDP)
    assert max_diff(resumed, build_weights(spec, tmp_path / "one")) < 1e-5
    assert not work.exists()


class Interrupt(Exception):
    pass


def _interrupted_after_a_checkpoint(spec, out, monkeypatch) -> None:
    """One FSDP process builds ``spec`` and stops at step 4, after its checkpoint at step 3."""
    import modkit.builder.build as build_module

    real = build_module.train_stage

    def crashing(*args, on_step, **kw):
        def boom(record):
            on_step(record)
            if record.step == 4:
                raise Interrupt
        return real(*args, on_step=boom, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(build_module, "train_stage", crashing)
        with pytest.raises(Interrupt):
            build_weights(spec, out, overrides=FSDP)


def test_a_checkpoint_of_one_fsdp_process_resumes_in_two(tmp_path, monkeypatch):
    spec = lm_spec(tmp_path, steps=6, batch_size=8, extra_stage="checkpoint_every = 3")
    _interrupted_after_a_checkpoint(spec, tmp_path / "out", monkeypatch)
    assert json.loads((tmp_path / ".out.work" / "checkpoint.json").read_text())["dcp"] == "checkpoint-0-3.dcp"
    done = cli_build(spec, tmp_path / "out", "--nproc", "2", "--strategy", "fsdp", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert max_diff(resumed, build_weights(spec, tmp_path / "one")) < 1e-5


def test_the_builds_own_model_holds_no_weights_while_its_shards_train(tmp_path, monkeypatch):
    import modkit.builder.build as build_module

    real, held = build_module.train_stage, []

    def watching(model, *args, on_step, **kw):
        def step(record):
            on_step(record)
            held.append(sum(p.numel() for p in model.backbone.parameters()))
        return real(model, *args, on_step=step, **kw)

    monkeypatch.setattr(build_module, "train_stage", watching)
    spec = lm_spec(tmp_path, steps=3, extra_stage="eval_every = 2")
    sharded = build_weights(spec, tmp_path / "fsdp", overrides=FSDP)
    assert held == [0, 0, 0]  # released at every step, after the evaluation at step 2 too
    monkeypatch.undo()
    assert max_diff(sharded, build_weights(spec, tmp_path / "plain")) < 1e-5  # and all came back


def test_a_checkpoint_written_under_fsdp_does_not_resume_under_ddp(tmp_path, monkeypatch):
    spec = lm_spec(tmp_path, steps=6, batch_size=8, extra_stage="checkpoint_every = 3")
    _interrupted_after_a_checkpoint(spec, tmp_path / "out", monkeypatch)
    # the resume fingerprint names the changed key before any checkpoint is read
    with pytest.raises(UserError, match="strategy: 'fsdp' -> 'ddp'"):
        build_weights(spec, tmp_path / "out", resume=True)


def test_bf16_under_fsdp_computes_in_bf16_and_steps_fp32_shards(tmp_path):
    import torch
    import torch.distributed as dist

    from modkit.builder.training.sharding import block_class, shard
    from peft_models import tiny_backbone

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        backbone = tiny_backbone("gpt")
        sharded = shard(backbone, block_class(backbone), torch.device("cpu"), 1, bf16=True)
        seen = []
        sharded.blocks[0].attn.q.register_forward_hook(lambda m, i, o: seen.append((m.weight.dtype, o.dtype)))
        sharded(torch.tensor([[5, 6, 7]])).last_hidden_state.float().sum().backward()
        assert seen == [(torch.bfloat16, torch.bfloat16)]
        assert {p.dtype for p in sharded.parameters()} == {torch.float32}
        assert {p.grad.dtype for p in sharded.parameters() if p.grad is not None} == {torch.float32}
    finally:
        dist.destroy_process_group()
    fp32 = build_weights(lm_spec(tmp_path, steps=4), tmp_path / "fp32")
    bf16 = build_weights(lm_spec(tmp_path, steps=4, extra_top='precision = "bf16"'), tmp_path / "bf16",
                         overrides=FSDP)
    assert all(v.dtype == torch.float32 for v in bf16.values())
    assert 0 < max_diff(fp32, bf16) < 0.05


def test_cpu_offload_under_fsdp_trains_the_same_weights(tmp_path):
    spec = lm_spec(tmp_path, steps=4)
    plain = build_weights(spec, tmp_path / "plain")
    offloaded = build_weights(spec, tmp_path / "offloaded", overrides=[*FSDP, "cpu_offload=true"])
    assert max_diff(plain, offloaded) < 1e-5
    assert json.loads((tmp_path / "offloaded" / "manifest.json").read_text())["training"]["cpu_offload"]


def test_cpu_offload_without_fsdp_is_a_spec_error(tmp_path):
    from modkit.errors import SpecError

    with pytest.raises(SpecError, match='cpu_offload: offloads FSDP\'s shards: it needs strategy = "fsdp"'):
        build_weights(lm_spec(tmp_path, steps=1, extra_top="cpu_offload = true"), tmp_path / "out")
    assert not (tmp_path / ".out.work").exists()


@pytest.mark.machine_dependent
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (NCCL)")
def test_fsdp_on_a_gpu_with_bf16_and_cpu_offload_trains(tmp_path):
    # NCCL, one GPU per process: every GPU of the machine, up to 2
    import torch

    n = min(torch.cuda.device_count(), 2)
    spec = lm_spec(tmp_path, steps=4, extra_top='device = "cuda"\nprecision = "bf16"\ncpu_offload = true')
    done = cli_build(spec, tmp_path / "out", "--nproc", str(n), "--strategy", "fsdp")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    training = manifest["training"]
    assert (training["strategy"], training["processes"], training["cpu_offload"]) == ("fsdp", n, True)
    # each process's peak of tensor memory on its own GPU
    peaks = manifest["stages"][0]["peak_memory"]
    assert [p["device"] for p in peaks] == [f"cuda:{r}" for r in range(n)]
    assert all(p["peak_allocated_bytes"] > 0 for p in peaks)
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
