"""Shared test fixtures: recorded HTTP (vcrpy) and a temporary run directory.

Cassettes hold real traffic recorded against the embedded local model server
(`opto_core.llm.local`), replayed offline with record mode ``none``. To re-record one, start the
server on the fixed recording address and run the test with ``OPTO_RECORD=1``:

    OPTO_RECORD=1 pytest tests/test_llm_http.py

Requests match on method and path only, in recorded order, so a changed prompt still replays
the genuine response that was recorded (the tests assert on what our code does with it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CASSETTES = Path(__file__).parent / "cassettes"
#: The address recordings were made against; tests point their clients here.
RECORD_BASE_URL = os.environ.get("OPTO_RECORD_BASE_URL", "http://127.0.0.1:8765/v1")


def _scrub_response(response):
    headers = response.get("headers", {})
    for key in list(headers):
        if key.lower() in ("set-cookie", "authorization", "x-api-key", "api-key", "openai-organization"):
            headers.pop(key)
    return response


@pytest.fixture
def cassette():
    """``with cassette("name"):`` replays tests/cassettes/name.yaml (records it with OPTO_RECORD=1)."""
    vcr = pytest.importorskip("vcr")
    recording = os.environ.get("OPTO_RECORD") == "1"
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="all" if recording else "none",
        match_on=["method", "path"],
        filter_headers=["authorization", "x-api-key", "api-key", "cookie", "openai-organization"],
        before_record_response=_scrub_response,
        decode_compressed_response=True,
    )

    def use(name: str):
        path = CASSETTES / f"{name}.yaml"
        if not recording and not path.exists():
            pytest.fail(f"cassette {path} is missing; record it with OPTO_RECORD=1 against the local server")
        return recorder.use_cassette(f"{name}.yaml", allow_playback_repeats=False)

    return use


@pytest.fixture
def record_base_url() -> str:
    return RECORD_BASE_URL


@pytest.fixture
def no_openai_env(monkeypatch):
    """No endpoint, key or model from the developer's environment leaks into a recorded test."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTO_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``make(source)``: a module of yours, written to a file and imported under a fresh name (as a user's
    code is: with a source file the adapters can read), removed from ``sys.modules`` afterwards."""
    import importlib
    import sys
    import textwrap
    from uuid import uuid4

    made: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(source: str, prefix: str = "user_module") -> object:
        name = f"{prefix}_{uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        made.append(name)
        return importlib.import_module(name)

    yield make
    for name in made:
        sys.modules.pop(name, None)


# ----- CI skips nothing silently -------------------------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``OPTO_NO_SKIPS=1`` (set by .ci/run) a skipped test fails, naming what it lacked.

    Every extra a test needs is installed by ``scripts/setup``; a skip in CI means a missing install
    step, which must be seen rather than hidden in a skip count.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("OPTO_NO_SKIPS") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under OPTO_NO_SKIPS=1 (CI installs every extra): {reason}"


@pytest.fixture(autouse=True)
def _each_test_starts_with_no_registered_secret():
    """A run registers its clients' keys as secrets for the whole process; a key one test uses
    ("scripted") must not be redacted from the next test's report, where it is only a model name."""
    from opto_core.kernel.redact import REDACTOR

    yield
    REDACTOR.forget_registered()
