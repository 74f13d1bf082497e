"""Fixtures for the web app's tests: a fresh app per test, no job or cache left behind by the one before."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"


@pytest.fixture(autouse=True)
def clean_app_state():
    """Each test starts with no job manager and empty Streamlit caches, and leaves none running."""
    from pages import _common

    _common.shutdown_job_managers()
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    _common.shutdown_job_managers()
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def empty_runs(tmp_path, monkeypatch) -> Path:
    """A runs folder with no run in it (the session's shared one holds the finished run)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("HEADSTART_RUNS_DIR", str(runs))
    return runs


@pytest.fixture
def open_page():
    """open_page('pages/data.py', state={...}) -> an AppTest that has run app.py and switched to that page."""

    def _open(page: str | None = None, state: dict | None = None, timeout: float = 60) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=timeout)
        for key, value in (state or {}).items():
            at.session_state[key] = value
        at.run()
        if page:
            at.switch_page(page).run()
        assert_clean(at)
        return at

    return _open


def assert_clean(at: AppTest) -> None:
    """No Streamlit exception and no raw traceback anywhere on the page."""
    assert not at.exception, [e.value for e in at.exception]
    texts = [e.value for e in at.markdown] + [e.value for e in at.error] + [e.value for e in at.warning]
    assert not any("Traceback (most recent call last)" in str(t) for t in texts)


def texts(at: AppTest) -> str:
    """Everything the page shows as text, in one string (markdown, captions, alerts, metrics, titles)."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "success", "warning", "error", "toast"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(parts)


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric '{label}' among {[m.label for m in at.metric]}"
    return found[0]


def wait_for_job(at: AppTest, states=("finished", "stopped", "failed", "cancelled"), timeout: float = 120):
    """Re-run the page (the browser's 1-second timer does not tick in AppTest) until the job reaches `states`."""
    from pages import _common

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manager = _common.job_manager()
        job = manager.get(at.session_state[_common.JOB])
        if job is not None and job.snapshot().state in states:
            at.run()
            return job.snapshot()
        time.sleep(0.5)
    raise AssertionError(f"the job did not reach {states} in {timeout} s")


def table_with(at: AppTest, column: str):
    """The first table (st.dataframe) on the page that has `column`, as a pandas DataFrame."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a '{column}' column")
