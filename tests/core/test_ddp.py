"""Data-parallel builds: torchrun, 2 CPU processes over gloo."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file

from specs import write_tiny_bert_spec
from test_train import build_weights, lm_spec, max_diff

MODKIT = [sys.executable, "-m", "modkit"]


def cli_build(spec: Path, out: Path, *extra: str, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*MODKIT, "build", str(spec), "-o", str(out), "--quiet", *extra], capture_output=True,
                          text=True, env=env, timeout=900, **kw)


def test_two_processes_equal_one_with_the_same_batch(tmp_path):
    spec = lm_spec(tmp_path, steps=20, batch_size=8)
    one = build_weights(spec, tmp_path / "one")
    done = cli_build(spec, tmp_path / "two", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert max_diff(one, two) < 1e-5
    assert not (tmp_path / ".two.work").exists()
    # rank 0 alone logged: one line per step
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 20
    # each process's peak memory, gathered onto rank 0
    peaks = json.loads((tmp_path / "two" / "manifest.json").read_text())["stages"][0]["peak_memory"]
    assert [p["rank"] for p in peaks] == [0, 1] and all(p["peak_rss_bytes"] > 0 for p in peaks)


def test_a_prompt_under_two_processes_equals_one(tmp_path):
    # the virtual tokens live in the backbone's input slot: DDP averages their gradient too
    spec = lm_spec(tmp_path, steps=6, batch_size=8, extra_stage='peft = [{ use = "prompt", num_virtual_tokens = 4 }]')
    spec.write_text(spec.read_text().replace("seq_len = 32", "seq_len = 28"))  # 28 + 4 virtual = 32 positions
    one = build_weights(spec, tmp_path / "one")
    done = cli_build(spec, tmp_path / "two", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert max_diff(one, two) < 1e-5
    assert "backbone.input_prompt.weight" in two


def test_an_mlm_and_nsp_stage_under_two_processes_equals_one(tmp_path):
    # Both heads are in the module DDP wraps, so their gradients are averaged too. Two processes
    # take half of each batch of 8, as one process does with micro-batches of 4 (MLM's loss is a
    # mean over its slice's masked tokens, so both average the two halves' losses).
    spec = write_tiny_bert_spec(tmp_path, '[{ use = "mlm" }, { use = "nsp", weight = 0.5 }]',
                                "[export]\nonnx = false")
    one = build_weights(spec, tmp_path / "one", overrides=["stages[0].batch_size=4", "stages[0].accumulate=2"])
    done = cli_build(spec, tmp_path / "two", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert any(k.startswith("objectives.nsp.") for k in two)  # (BERT keeps its MLM head in the backbone)
    assert max_diff(one, two) < 1e-5
    # each objective's own loss is the mean over both processes, as one process sees it
    stages = [json.loads((tmp_path / name / "manifest.json").read_text())["stages"][0] for name in ("one", "two")]
    for name in ("mlm", "nsp"):
        for key in ("loss_first_10", "loss_last_10"):
            assert abs(stages[0]["losses"][name][key] - stages[1]["losses"][name][key]) < 1e-5
    # MFU over both processes' peaks (the tokens/s are both processes')
    assert all(0 < stage["mfu"] <= 1 for stage in stages)


def test_a_batch_that_does_not_split_over_the_processes_is_a_spec_error(tmp_path):
    spec = lm_spec(tmp_path, steps=2, batch_size=3)
    done = cli_build(spec, tmp_path / "out", "--nproc", "2")
    assert done.returncode != 0
    assert "stages[0].batch_size: 3 does not divide into 2 processes" in done.stderr
    assert not (tmp_path / "out").exists()


def _pids_with(tag: str, rank: str) -> list[int]:
    """Processes whose environment carries ``tag`` and LOCAL_RANK=rank (torchrun's workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"MODKIT_TEST_TAG={tag}".encode() in env and f"LOCAL_RANK={rank}".encode() in env:
                found.append(int(proc.name))
    return found


@pytest.mark.machine_dependent
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
@pytest.mark.parametrize("optimizer", ["", 'optimizer = { use = "adafactor", beta1 = 0.9 }'], ids=["adamw", "adafactor"])
def test_a_rank_that_dies_fails_the_build_cleanly_and_it_resumes(tmp_path, optimizer):
    spec = lm_spec(tmp_path, steps=40, batch_size=8, extra_stage=f"checkpoint_every = 5\n{optimizer}")
    out, work = tmp_path / "out", tmp_path / ".out.work"
    tag = uuid.uuid4().hex
    env = {**os.environ, "MODKIT_TEST_TAG": tag}
    launcher = subprocess.Popen([*MODKIT, "build", str(spec), "-o", str(out), "--quiet", "--nproc", "2"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not (work / "checkpoint.json").exists() or '"step": 0' in (work / "checkpoint.json").read_text():
        assert launcher.poll() is None and time.monotonic() < deadline, "the build ended before a checkpoint"
        time.sleep(0.2)
    for pid in _pids_with(tag, "1"):
        os.kill(pid, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=300)  # no hang: torchrun stops rank 0 too
    assert launcher.returncode != 0
    assert "--resume" in stderr
    assert not out.exists()
    done = cli_build(spec, out, "--nproc", "2", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = load_file(str(out / "model.safetensors"))
    if not optimizer:
        assert max_diff(resumed, build_weights(spec, tmp_path / "one")) < 1e-5
        return
    # Adafactor scales even the key biases' gradients (zero but for rounding: softmax ignores a
    # shift) to full steps, so one process and two (another summation order) part; the resumed
    # two-process build equals the uninterrupted one bit for bit.
    done = cli_build(spec, tmp_path / "two", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_diff(resumed, load_file(str(tmp_path / "two" / "model.safetensors"))) == 0


def test_a_pinned_gpu_under_ddp_is_a_spec_error(tmp_path):
    from modkit.builder.preflight import check_world
    from modkit.errors import SpecError
    from modkit.spec import load_spec

    spec = load_spec(lm_spec(tmp_path, extra_top='device = "cuda:1"'))
    with pytest.raises(SpecError, match='device: cuda:1 would put all 2 processes on one GPU; use "cuda"'):
        check_world(spec, 2)
    check_world(spec, 1)
