"""Deploying optimized classic AutoGen (AG2) values: ``apply_values`` into freshly built agents or a group chat."""

from __future__ import annotations

from typing import Any, Sequence

from opto_adapters.autogen.ag2.parameters import bound_parameters
from opto_adapters.autogen.ag2.target import FRAMEWORK
from opto_core.kernel.binding import UnknownParameters
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.values import apply_saved


def apply_values(
    agents_or_groupchat: Any, values_or_path: Any, parameters: Sequence[Parameter] | None = None, *, run: Any = None
) -> dict[str, Any]:
    """Deploy saved values (a dict, or an ``opto-values/1`` file) into AG2 agents; returns what was written.

    ``run``: the function that starts the conversation, when it fills a system message from a
    template (its templates are parameters, as in `AG2Target`). ``parameters``: your own
    `Parameter` objects optimized with the agents. Every value is validated and every name checked
    before anything is written (an unknown name is an error saying how to pass your own); a failing
    write restores the earlier ones.
    """
    bound = bound_parameters(agents_or_groupchat, run=run) if run is not None else bound_parameters(agents_or_groupchat)
    try:
        return apply_saved(bound, values_or_path, framework=FRAMEWORK, parameters=parameters)
    except UnknownParameters as exc:
        if run is not None:
            raise
        raise UnknownParameters(
            "the values name parameters these agents do not have:",
            exc.unknown,
            exc.known,
            "A template your run function fills (run.TEMPLATE) is found with run=<that "
            "function>; a Parameter of your own is passed with parameters=[...]",
        ) from None
