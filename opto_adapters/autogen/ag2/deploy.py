"""Deploying optimized classic AutoGen (AG2) values: ``apply_values`` into freshly built agents or a group chat."""

from __future__ import annotations

from typing import Any

from opto_adapters.autogen.ag2.parameters import bound_parameters
from opto_adapters.autogen.ag2.target import FRAMEWORK
from opto_core.kernel.values import apply_saved


def apply_values(agents_or_groupchat: Any, values_or_path: Any) -> dict[str, Any]:
    """Deploy saved values (a dict, or an ``opto-values/1`` file) into AG2 agents; returns what was written.

    Every value is validated and every name checked before anything is written; a failing write
    restores the earlier ones.
    """
    return apply_saved(bound_parameters(agents_or_groupchat), values_or_path, framework=FRAMEWORK)
