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


@pytest.fixture(autouse=True)
def _no_tracking_uri_left():
    """A test reading runs sets MLflow's tracking URI (and so $MLFLOW_TRACKING_URI, which the
    tracker honours): unset it after each, so a later build writes where its own spec says."""
    yield
    import mlflow

    mlflow.set_tracking_uri(None)


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


class Interrupt(Exception):
    pass


def test_an_interrupted_run_fails_and_the_resumed_one_logs_on_at_the_same_steps(tmp_path, monkeypatch):
    import mlflow

    from modkit.builder import build as build_module
    spec, out = _spec(tmp_path, '["mlflow"]'), tmp_path / "out"
    spec.write_text(spec.read_text().replace("steps = 3\n", "steps = 3\ncheckpoint_every = 1\n"))
    real = build_module.train_stage

    def crashing(model, objective, data, stage_cfg, *, index, on_step, **kw):
        def boom(record):
            on_step(record)
            if index == 1 and record.step == 2:
                raise Interrupt
        return real(model, objective, data, stage_cfg, index=index, on_step=boom, **kw)

    monkeypatch.setattr(build_module, "train_stage", crashing)
    with pytest.raises(Interrupt):
        modkit.build(spec, out, progress=False, echo=lambda _: None)
    monkeypatch.setattr(build_module, "train_stage", real)
    manifest = modkit.build(spec, out, progress=False, echo=lambda _: None, resume=True)
    uri = manifest["tracking"]["mlflow"]["tracking_uri"]
    client = mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tracked"], order_by=["start_time"])
    assert list(runs["status"]) == ["FAILED", "FINISHED"]
    steps = [sorted(m.step for m in client.get_metric_history(r, "loss")) for r in runs["run_id"]]
    # the crash came before step 2 of stage 2 was checkpointed: the resumed run redoes it, at the
    # same global step (stage 1's four steps + 2), then logs the last one
    assert steps == [[1, 2, 3, 4, 5, 6], [6, 7]]


def test_a_tracking_server_that_is_not_there_stops_the_build_naming_the_tracker(tmp_path):
    """Exit 2, before any training, with what MLflow said; no artifact, no traceback."""
    spec = _spec(tmp_path, '[{ use = "mlflow", tracking_uri = "http://127.0.0.1:9" }]')  # port 9: nothing listens
    env = {**__import__("os").environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    result = subprocess.run([*MODKIT, "build", str(spec), "-o", str(tmp_path / "out"), "--quiet"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "track: 'mlflow' could not start its run" in result.stderr and "127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr and "step" not in result.stdout
    assert not (tmp_path / "out").exists()
