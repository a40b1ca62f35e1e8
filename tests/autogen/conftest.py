"""Fixtures for the AutoGen adapter tests: real AgentChat agents and teams, with AutoGen's own
``ReplayChatCompletionClient`` as the only fake (the model)."""

from __future__ import annotations

import importlib.util
import logging

if importlib.util.find_spec("autogen_agentchat") is None or importlib.util.find_spec("autogen_ext") is None:
    collect_ignore_glob = ["test_autogen_*.py"]
else:
    # The replay client logs a warning for every reflection call and token count; keep output readable.
    logging.getLogger("autogen_core.events").setLevel(logging.ERROR)
