"""In CI (``CI=true``) a skipped test is a failure: a CI run must not pass while checking nothing.

The parity tests against transformers, tokenizers, tiktoken and the MiniLM files, and the
third-party plugin tests, skip on a developer's machine that lacks those packages; in CI
they must have run. A test whose skip depends only on the machine (say, on a GPU being
there) carries ``@pytest.mark.machine_dependent`` and may still skip.
"""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _fail(report, reason: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, where every test must run: {reason}"


def _reason(longrepr) -> str:
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") \
            and item.get_closest_marker("machine_dependent") is None:
        _fail(report, _reason(report.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()
    if IN_CI and report.outcome == "skipped":  # a module-level importorskip
        _fail(report, _reason(report.longrepr))
