"""opto_core: Trace-style optimization (OPTO) of workflows, with no agent framework inside.

Read it top to bottom like a short textbook: `graph` (a run as a DAG), `parameters` (what may
change, and the rules), `code` and `code_policy` (code values: their shape, the static policy,
compiling them like the original), `binding` (writing values into a live workflow, with undo),
`provenance` (which step produced a value), `trace` (recording plain Python), `backward` (from
feedback to a problem instance), `render` (the instance as a prompt within a token budget),
`optimizers` (OptoPrime, Hybrid, Search and baselines), `llm` (the model client), `executors`
(where evaluations run), `settings` and `loop` (the training loop), `values` (optimized values on
disk) and `report`.

Names are imported lazily so that ``import opto_core`` stays fast and pulls in no LLM client.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .feedback import Feedback
from .graph import Edge, Graph, GraphError, Node
from .parameters import InvalidValue, Parameter

# `backward` and `render` are both modules and functions: import the functions now, so that a
# later import of the submodules cannot shadow them.
from .backward import BackwardError, ProblemInstance, backward  # noqa: E402
from .render import render  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "OptoPrime": ("optimizers", "OptoPrime"),
    "Proposal": ("optimizers", "Proposal"),
    "OpenAIChat": ("llm", "OpenAIChat"),
    "optimize": ("loop", "optimize"),
    "OptimizationResult": ("loop", "OptimizationResult"),
    "Target": ("target", "Target"),
    "FunctionTarget": ("trace", "FunctionTarget"),
    "Settings": ("settings", "Settings"),
    "load_values": ("values", "load_values"),
    "save_values": ("values", "save_values"),
    "Binding": ("binding", "Binding"),
    "BoundParameters": ("binding", "BoundParameters"),
    "CodePolicy": ("code_policy", "CodePolicy"),
}

__all__ = ["BackwardError", "ProblemInstance", "backward", "render", "Edge", "Feedback", "Graph", "GraphError", "InvalidValue", "Node", "Parameter", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(import_module(f".{module}", __name__), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'opto_core' has no attribute {name!r}")
