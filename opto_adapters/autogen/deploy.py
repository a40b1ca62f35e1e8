"""Deploying optimized AgentChat values: ``apply_values`` into a freshly built agent or team."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from opto_adapters.autogen.agent import (
    FRAMEWORK,
)
from opto_adapters.autogen.parameters import bound_parameters
from opto_core.kernel.binding import UnknownParameters
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.values import apply_saved


def apply_values(
    obj: Any,
    values_or_path: Any,
    parameters: Sequence[Parameter] | None = None,
    *,
    system_templates: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write saved values (an ``opto-values/1`` file, its document, or a dict) into a freshly built
    agent or team; returns what was applied. ``parameters``: your own `Parameter` objects optimized
    with it. ``system_templates``: as for `TeamTarget` (``{"support": SUPPORT_TEMPLATE}``): an agent
    your code built with ``system_message=SUPPORT_TEMPLATE.format(...)`` gets the optimized template
    filled with the values its message holds now. Unknown names fail before anything is written,
    saying how to pass them."""
    options = {"system_templates": system_templates} if system_templates else {}
    try:
        return apply_saved(bound_parameters(obj, **options), values_or_path, framework=FRAMEWORK, parameters=parameters)
    except UnknownParameters as exc:
        templates = sorted(name.rsplit(".", 1)[0] for name in exc.unknown if name.endswith(".system_template"))
        if not templates or system_templates:
            raise
        raise UnknownParameters(
            "the values name parameters this workflow does not have:",
            exc.unknown,
            exc.known,
            f"A system template optimized with TeamTarget(system_templates=...) is deployed "
            f"with apply_values(..., system_templates={{{templates[0]!r}: <the template>}}); "
            f"a Parameter of your own is passed with parameters=[...]",
        ) from None
