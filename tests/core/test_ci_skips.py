"""With CI=true a skip fails the run (tests/ci_skips.py), except a machine-dependent one."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SAMPLE = textwrap.dedent('''
    import pytest

    def test_reference_missing():
        pytest.importorskip("no_such_reference_package")

    @pytest.mark.machine_dependent
    def test_needs_a_gpu():
        pytest.skip("no GPU here")

    def test_runs():
        assert True
''')


def run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors",
                           "-W", "ignore::pytest.PytestUnknownMarkWarning", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True)


@pytest.fixture
def sample(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "test_module_skip.py").write_text('import pytest\npytest.importorskip("no_such_module_either")\n')
    return tmp_path


def test_skips_fail_in_ci(sample):
    proc = run_pytest(sample, "true")
    assert proc.returncode == 1, proc.stdout
    out = proc.stdout
    assert "FAILED test_sample.py::test_reference_missing" in out and "skipped in CI" in out
    assert "ERROR test_module_skip.py" in out or "FAILED test_module_skip.py" in out
    assert "SKIPPED [1] test_sample.py" in out and "no GPU here" in out  # machine-dependent: allowed
    assert "1 passed" in out


def test_skips_stay_skips_outside_ci(sample):
    proc = run_pytest(sample, None)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 3 skipped" in proc.stdout


def test_assets_fetch_fails_when_an_asset_is_still_missing(monkeypatch, tmp_path, capsys):
    import assets

    monkeypatch.setattr(assets, "CACHE", tmp_path)
    monkeypatch.setattr(assets, "fetch", lambda: None)  # a download that brought nothing
    monkeypatch.setattr(assets, "ASSETS", {"nothing.txt": ("no-such-dist==1", "x/nothing.txt", None)})
    assert assets.main(["fetch"]) == 1
    assert "nothing.txt: MISSING" in capsys.readouterr().out
    (tmp_path / "nothing.txt").write_text("found")
    assert assets.main(["fetch"]) == 0
