"""Trackers: a build's metrics.jsonl, spec and artifact, read back with TensorBoard's own
EventAccumulator and mlflow.search_runs; never imported unless chosen."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import modkit
from modkit.errors import SpecError
from modkit.spec import load_spec

from specs import tiny_gpt_parts, write_corpus

MODKIT = [sys.executable, "-m", "modkit"]


def _spec(folder: Path, track: str = "[]") -> Path:
    write_corpus(folder, 6000)
    spec = folder / "spec.toml"
    spec.write_text(f'name = "tracked"\ntrack = {track}\n{tiny_gpt_parts()}\n'
                    '[[stages]]\nobjective = { use = "clm" }\ndata = "corpus.txt"\nsteps = 4\nbatch_size = 2\n'
                    'seq_len = 16\neval_every = 2\n'
                    '[[stages]]\nobjective = { use = "clm" }\ndata = "corpus.txt"\nsteps = 3\nbatch_size = 2\n'
                    'seq_len = 16\nlr = 1e-4\n[export]\nonnx = false\n')
    return spec


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracked")
    spec = _spec(folder, '[{ use = "tensorboard", run_name = "first" }]')
    manifest = modkit.build(spec, folder / "out", progress=False, echo=lambda _: None, track=["mlflow"])
    lines = [json.loads(line) for line in (folder / "out" / "metrics.jsonl").read_text().splitlines()]
    return folder, manifest, lines


def test_tensorboard_event_files_hold_every_metric(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, manifest, lines = tracked
    assert manifest["tracking"]["tensorboard"]["log_dir"] == str(folder / "runs" / "first")
    events = EventAccumulator(str(folder / "runs" / "first"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "tokens_per_second", "mfu", "eval_loss"} <= tags
    # stage 2 runs on from stage 1's last step: 7 steps in all
    expected = [(i + 1, line["loss"]) for i, line in enumerate(lines)]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars("loss")] == expected
    assert [e.step for e in events.Scalars("eval_loss")] == [2, 4, 7]
    assert events.Scalars("lr")[-1].value == pytest.approx(lines[-1]["lr"], rel=1e-6)
    assert all(e.value > 0 for e in events.Scalars("grad_norm"))
    assert "spec/text_summary" in events.Tags()["tensors"]


def test_mlflow_run_holds_metrics_params_and_the_artifact(tracked):
    import mlflow

    folder, manifest, lines = tracked
    record = manifest["tracking"]["mlflow"]
    assert record["tracking_uri"] == f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(record["tracking_uri"])
    runs = mlflow.search_runs(experiment_names=["tracked"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["run_id"] == record["run_id"] and run["status"] == "FINISHED"
    assert run["metrics.loss"] == pytest.approx(lines[-1]["loss"])
    assert run["metrics.eval_loss"] == pytest.approx(lines[-1]["eval_loss"])
    assert run["params.stages.1.lr"] == "0.0001" and run["params.backbone.d_model"] == "32"
    assert run["params.name"] == "tracked"
    client = mlflow.MlflowClient(record["tracking_uri"])
    history = client.get_metric_history(record["run_id"], "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(i + 1, pytest.approx(line["loss"])) for i, line in enumerate(lines)]
    files = {f.path for f in client.list_artifacts(record["run_id"], "artifact")}
    assert {"artifact/manifest.json", "artifact/model.safetensors", "artifact/metrics.jsonl"} <= files


def test_an_unknown_tracker_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match=r"track\[0\]\.use: unknown tracker 'mlfow'; did you mean 'mlflow'"):
        load_spec(_spec(tmp_path, '["mlfow"]'))
    result = subprocess.run([*MODKIT, "build", str(_spec(tmp_path)), "-o", str(tmp_path / "out"), "--track", "tensorbord"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "track[0].use: unknown tracker 'tensorbord'" in result.stderr


def test_trackers_are_not_imported_unless_chosen(tmp_path):
    code = ("import sys, modkit; from modkit.spec import load_spec; "
            f"spec = load_spec({str(_spec(tmp_path))!r}, track=['mlflow', 'tensorboard']); "
            "assert [t.component.name for t in spec.trackers] == ['mlflow', 'tensorboard']; "
            "bad = [m for m in ('mlflow', 'tensorboard', 'torch') if m in sys.modules]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
