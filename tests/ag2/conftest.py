"""Fixtures for the classic AutoGen (AG2) adapter tests: real AG2 agents whose model calls go over HTTP
to a scripted OpenAI-compatible server on 127.0.0.1 (the only fake is the model)."""

from __future__ import annotations

import importlib.util
import logging
import warnings

import pytest

if importlib.util.find_spec("autogen") is None or importlib.util.find_spec("autogen.agentchat") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    # AG2 warns about unknown model prices and overridden tools on every call; keep the output readable.
    logging.getLogger("autogen.oai.client").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="autogen")


@pytest.fixture
def server():
    from opto_core.testing.scripted_server import ScriptedServer

    with ScriptedServer() as scripted:
        yield scripted
