"""Deploying optimized values: write a saved ``opto-values/1`` file into a freshly built chain, agent or graph.

    target.save_values("values.json")                  # after optimizing (or result.save_values)
    ...
    chain = build_chain()                              # in production: build it as usual
    apply_values(chain, "values.json")                 # then write the optimized values in

The names are the ones `parameters_of` gives the same objects, so the chain must be built the
same way. Checking and writing are the core's (`opto_core.kernel.values.apply_saved`).
"""

from __future__ import annotations

from typing import Any, Sequence

from opto_adapters.langchain.parameters import (
    FRAMEWORK,
    MODEL_NAME_FIELDS,
    NoParametersFound,
    all_parameters,
    binding_of,
)
from opto_core.engine.target import BoundTarget
from opto_core.kernel.binding import BoundParameters
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.values import apply_saved, resolve


def apply_values(obj: Any, values_or_path: Any, parameters: Sequence[Parameter] | None = None) -> dict[str, Any]:
    """Write saved values into ``obj`` (a runnable, agent, graph, or a `ChainTarget`); return what was applied.

    ``values_or_path``: a path to an ``opto-values/1`` file, such a document, or a plain dict of
    values by name. ``parameters``: your own `Parameter` objects that were optimized with the chain
    (``meta={"used_by": ...}``): discovery cannot find them, so pass them here to write their saved
    values into them. A saved model name (optimized with ``model_choices``) is written into the
    same model of the fresh chain. An unknown name is an error listing the known ones (and saying
    how to pass your own) and nothing is written; a file saved from another framework is refused,
    naming both.
    """
    saved = resolve(values_or_path, FRAMEWORK)
    if isinstance(obj, BoundTarget):  # a ChainTarget: its own parameters
        bound = obj.bound
    else:
        found, _ = all_parameters(obj)
        known = {p.name for p in found}
        models = {
            name: [value]
            for name, value in saved.items()
            if name not in known and isinstance(value, str) and name.rsplit(".", 1)[-1] in MODEL_NAME_FIELDS
        }
        try:
            found, _ = all_parameters(obj, models or None)
        except NoParametersFound:  # not a model of this chain: the unknown name is reported below
            pass
        bound = BoundParameters([(p, binding_of(p)) for p in found])
    return apply_saved(bound, saved, framework=FRAMEWORK, parameters=parameters)
