"""Helpers of the gateway tests: reading recorded requests and graphs, and one optimization step with a
scripted optimizer model."""

from __future__ import annotations

import json
from typing import Any, Callable

from opto_core import OptoPrime, optimize
from opto_core.testing import ScriptedLLM

#: A key that looks like nothing real: the gateway must put it on upstream requests and nowhere else.
UPSTREAM_KEY = "test-upstream-key-0123"


def system_of(body: dict[str, Any]) -> str:
    """The system prompt of a recorded request, in either format."""
    if "instructions" in body:
        return body["instructions"] or ""
    first = body["messages"][0]
    return first["content"] if first["role"] in ("system", "developer") else ""


def suggest(values: dict[str, Any]) -> str:
    return json.dumps({"reasoning": "the feedback asks for it", "suggestion": values})


def one_step(target: Any, trainset: list[Any], feedback: Callable[[Any, Any], Any], values: dict[str, Any]) -> Any:
    """One optimization step through the real loop, with an optimizer model that suggests ``values``."""
    llm = ScriptedLLM([suggest(values)], repeat_last=True)
    return optimize(
        target, trainset, feedback, OptoPrime(target.parameters(), llm), max_steps=1, batch_size=len(trainset)
    )


def data_parents(graph: Any, node_id: str) -> list[str]:
    return [edge.id for edge in graph[node_id].edges if edge.via == "data"]


def reaches(graph: Any, source: str, target: str, via: tuple[str, ...] = ("data",)) -> bool:
    """Whether a path of ``via`` edges leads from ``source`` to ``target``."""
    stack, seen = [target], set()
    while stack:
        node = stack.pop()
        if node == source:
            return True
        if node in seen:
            continue
        seen.add(node)
        stack.extend(edge.id for edge in graph[node].edges if edge.via in via)
    return False
