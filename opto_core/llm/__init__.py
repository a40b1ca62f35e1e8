"""The LLM client layer: talking to any OpenAI-compatible endpoint, and what it costs.

Holds the client (`client.OpenAIChat`: retries, JSON output, context windows, prices), usage and
cost accounting (`usage`), and the embedded local model server (`local`).

May import: the kernel. Users import `OpenAIChat` from `opto_core`; ``opto_core.llm.OpenAIChat``
still works for one release, with a deprecation warning.
"""

from __future__ import annotations

from typing import Any

from opto_core._moved import deprecated_attribute

_OLD_NAMES = {
    "OpenAIChat": "opto_core.llm.client",
    "LLMError": "opto_core.llm.client",
    "ContextWindowExceeded": "opto_core.llm.client",
    "load_prices": "opto_core.llm.client",
    "price_of": "opto_core.llm.client",
    "known_window": "opto_core.llm.client",
    "context_numbers": "opto_core.llm.client",
    "ChatResult": "opto_core.llm.usage",
    "Usage": "opto_core.llm.usage",
}


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _OLD_NAMES)
