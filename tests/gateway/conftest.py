"""Fixtures of the gateway tests: a scripted upstream on 127.0.0.1 and a gateway in front of it (only the
models are fake; programs and clients are real)."""

from __future__ import annotations

import os

import pytest
from gateway_helpers import UPSTREAM_KEY

from opto_core.gateway.proxy import Gateway
from opto_core.testing import ScriptedServer


@pytest.fixture
def upstream():
    server = ScriptedServer().start()
    yield server
    server.stop()


@pytest.fixture
def gateway(upstream):
    proxy = Gateway(upstream.base_url, api_key=UPSTREAM_KEY).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def no_agents_tracing(monkeypatch):
    """The OpenAI Agents SDK exports its traces to OpenAI unless told not to (no network here)."""
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    return agents


@pytest.fixture(autouse=True)
def _no_real_endpoint(monkeypatch):
    """No endpoint or key from the developer's environment reaches a gateway test."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTO_UPSTREAM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "program-dummy-key")
    yield
    os.environ.pop("OPTO_RUN_ID", None)
