"""LangChain and LangGraph adapter: trace chains, agents and graphs with one callback, optimize them in place.

    from opto_adapters.langchain import OptoCallbackHandler, ChainTarget, parameters_of

    handler = OptoCallbackHandler()
    chain.invoke(x, config={"callbacks": [handler]})
    handler.last_graph                      # the run as an OPTO graph

    target = ChainTarget(chain)             # parameters_of(chain): prompts, model settings, tools
    opto_core.optimize(target, trainset, feedback_fn, OptoPrime(target.parameters(), llm))
    target.save_values("values.json")       # later, on a freshly built chain:
    apply_values(chain, "values.json")

Needs the ``langchain`` extra: ``pip install opto-adapters[langchain]``.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the LangChain adapter needs langchain-core: pip install 'opto-adapters[langchain]'") from exc

from opto_adapters.langchain.deploy import apply_values
from opto_adapters.langchain.parameters import NoParametersFound, bound_parameters, parameters_of
from opto_adapters.langchain.target import ChainTarget, optimize_chain
from opto_adapters.langchain.tracing.handler import OptoCallbackHandler, opto_trace

__all__ = [
    "ChainTarget",
    "apply_values",
    "NoParametersFound",
    "OptoCallbackHandler",
    "bound_parameters",
    "optimize_chain",
    "opto_trace",
    "parameters_of",
]
