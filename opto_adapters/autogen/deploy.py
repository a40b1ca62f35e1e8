"""Deploying optimized AgentChat values: ``apply_values`` into a freshly built agent or team."""

from __future__ import annotations

from typing import Any, Sequence

from opto_adapters.autogen.agent import (
    FRAMEWORK,
)
from opto_adapters.autogen.parameters import bound_parameters
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.values import apply_saved


def apply_values(obj: Any, values_or_path: Any, parameters: Sequence[Parameter] | None = None) -> dict[str, Any]:
    """Write saved values (an ``opto-values/1`` file, its document, or a dict) into a freshly built
    agent or team; returns what was applied. ``parameters``: your own `Parameter` objects optimized
    with it. Unknown names fail before anything is written, saying how to pass your own."""
    return apply_saved(bound_parameters(obj), values_or_path, framework=FRAMEWORK, parameters=parameters)
