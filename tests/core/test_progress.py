"""Build progress: periodic lines where stderr is a log, nothing with --quiet."""
from __future__ import annotations

import io

from modkit.builder.telemetry.progress import StageProgress


def run_stage(stream, total=20, **kw):
    with StageProgress("stage 1/1 clm", total, 0, tokens_per_step=64, lr_of=lambda s: 1e-3, stream=stream,
                       live=False, **kw) as tick:
        for step in range(1, total + 1):
            tick(step, 5.0 - step / 10)
    return stream.getvalue().splitlines()


def test_a_log_gets_a_line_every_tenth_of_the_stage_with_the_figures():
    lines = run_stage(io.StringIO())
    assert len(lines) == 10
    assert lines[0].startswith("stage 1/1 clm: step 2/20 (10%) loss 4.800 lr 1.00e-03 ")
    assert "tok/s eta " in lines[0] and " elapsed " in lines[0]
    assert lines[-1].startswith("stage 1/1 clm: step 20/20 (100%) loss 3.000")


def test_a_slow_stage_prints_by_time_too():
    lines = run_stage(io.StringIO(), total=5, every_steps=100, every_seconds=0.0)
    assert [line.split(": step ")[1].split()[0] for line in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5"]


def test_quiet_prints_nothing():
    assert run_stage(io.StringIO(), quiet=True) == []
