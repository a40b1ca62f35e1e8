"""Test doubles that fake only the model: for users' tests, our tests, examples and benchmarks.

- `ScriptedLLM`: an optimizer-side chat model that answers from a script and records each request.
- `ScriptedServer`: a scripted OpenAI-compatible HTTP server on 127.0.0.1 (chat completions, tool
  calls, provider errors), for real clients and real frameworks; `tool_call`, `http_error` and
  `system_text` build and read its messages.
- `quiet_http_server`: the loopback HTTP server both are built on.
- `AdapterCase`, `CHECKS`: the conformance suite every adapter passes (`opto_core.testing.conformance`).

May import: the kernel and the LLM layer. This is a public path: ``from opto_core.testing import ScriptedLLM``.
"""

from opto_core.testing.conformance import CHECKS, AdapterCase
from opto_core.testing.doubles import ScriptedLLM, quiet_http_server
from opto_core.testing.scripted_server import ScriptedServer, http_error, system_text, tool_call

__all__ = [
    "CHECKS",
    "AdapterCase",
    "ScriptedLLM",
    "ScriptedServer",
    "http_error",
    "quiet_http_server",
    "system_text",
    "tool_call",
]
