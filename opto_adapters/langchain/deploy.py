"""Deploying optimized values: write a saved ``opto-values/1`` file into a freshly built chain, agent or graph.

    target.save_values("values.json")                  # after optimizing (or result.save_values)
    ...
    chain = build_chain()                              # in production: build it as usual
    apply_values(chain, "values.json")                 # then write the optimized values in

The names are the ones `parameters_of` gives the same objects, so the chain must be built the
same way. Checking and writing are the core's (`opto_core.kernel.values.apply_saved`).
"""

from __future__ import annotations

from typing import Any

from opto_adapters.langchain.parameters import FRAMEWORK, bound_parameters
from opto_core.kernel.values import apply_saved


def apply_values(obj: Any, values_or_path: Any) -> dict[str, Any]:
    """Write saved values into ``obj`` (a runnable, agent, graph, or a `ChainTarget`); return what was applied.

    ``values_or_path``: a path to an ``opto-values/1`` file, such a document, or a plain dict of
    values by name. An unknown name is an error listing the known ones and nothing is written; a
    file saved from another framework is refused, naming both.
    """
    return apply_saved(bound_parameters(obj), values_or_path, framework=FRAMEWORK)
