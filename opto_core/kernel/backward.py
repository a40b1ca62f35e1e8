"""Backward: from feedback on outputs to the problem instance an optimizer reads.

In a neural network, backward sends gradients from the loss to every weight. In OPTO, the
"gradient" is the part of the run that explains the output: every op on a path from a
trainable parameter to an output that received feedback, with the values it saw. Trace builds
that subgraph by having every node copy its downstream graph (quadratic, and worse with shared
parameters); here it is two linear walks over the DAG:

1. up from the outputs with feedback (which nodes could have influenced them), then
2. down from the trainable parameters among those (which of them a parameter influenced).

Their intersection is the minimal subgraph. Its ops, in execution order, become the ``#Code``
lines; the values that enter it from outside become ``#Inputs``; trainable parameters become
``#Variables``; the rest are ``#Others`` and ``#Outputs`` (the sections of Trace's OptoPrime).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from opto_core.kernel.feedback import Feedback
from opto_core.kernel.graph import EDGE_KINDS, Graph, Node

INSTRUCTION = (
    "You need to change the values of the variables in #Variables to improve the output in accordance with #Feedback."
)

#: Edge kinds followed by default: all of them. The conversation builder marks prompt-only messages
#: `VIA_CONTEXT`; pass ``follow=(VIA_DATA, VIA_CALL_TREE, VIA_CONTROL)`` to credit producers only.
ALL_EDGES = EDGE_KINDS


class BackwardError(ValueError):
    """Feedback that cannot be traced back (not on an output, or no trainable parameter on any path)."""


@dataclass
class ProblemInstance:
    """One run's share of an optimization problem, in Trace's sections (render turns it into text)."""

    graph: Graph
    instruction: str
    code: list[Node]  # ops (and exceptions) on a path, in execution order
    documentation: dict[str, str]  # op name -> what it does
    variables: list[Node]  # trainable parameters on a path
    inputs: list[Node]  # values that enter the subgraph from outside it
    others: list[Node]  # intermediate op values
    outputs: list[Node]  # op values that received feedback
    feedback: dict[str, Feedback]  # op node id -> its feedback
    names: dict[str, str] = field(default_factory=dict)  # node id -> short unique name in the prompt

    @property
    def exceptions(self) -> list[Node]:
        return [node for node in self.code if node.kind == "exception"]

    @property
    def parameter_names(self) -> list[str]:
        return [node.name for node in self.variables]

    def feedback_text(self) -> str:
        if len(self.feedback) == 1:
            return next(iter(self.feedback.values())).render()
        return "\n".join(f"{self.names.get(nid, nid)}: {fb.render()}" for nid, fb in self.feedback.items())


def feedback_targets(graph: Graph, feedback: Any) -> dict[str, Feedback]:
    """Map feedback to the op nodes it is about: ``{op node id: Feedback}``."""
    outputs = graph.outputs
    if not outputs:
        raise BackwardError("the graph has no output node; mark one with graph.mark_output(node_id)")
    if not isinstance(feedback, Mapping) or _looks_like_feedback_dict(feedback):
        return {out.edges[0].id: Feedback.coerce(feedback) for out in outputs}
    targets: dict[str, Feedback] = {}
    for key, value in feedback.items():
        node = graph.get(key)
        if node is None:
            named = [n for n in outputs if n.name == key]
            if not named:
                raise BackwardError(
                    f"feedback names {key!r}, which is no node id and no output name; "
                    f"outputs are {[o.id for o in outputs]}"
                )
            node = named[0]
        if node.kind != "output":
            marked = [o for o in outputs if o.edges[0].id == node.id]
            if not marked:
                raise BackwardError(
                    f"feedback on node {node.id!r} ({node.kind}), which is not an output; "
                    f"outputs are {[o.id for o in outputs]}"
                )
            node = marked[0]
        targets[node.edges[0].id] = Feedback.coerce(value)
    return targets


def _looks_like_feedback_dict(value: Mapping[str, Any]) -> bool:
    return set(value) <= {"score", "feedback", "text"} and bool(value)


def backward(
    graph: Graph, feedback: Any, *, instruction: str = INSTRUCTION, follow: Iterable[str] = ALL_EDGES
) -> ProblemInstance:
    """Keep what lies between the trainable parameters and the outputs with feedback.

    ``feedback`` is one feedback for every output (a `Feedback`, number, string or pair), or a
    mapping from output (id or name, or the id of the node it marks) to feedback.
    """
    targets = feedback_targets(graph, feedback)
    follow = frozenset(follow)
    nodes = graph.nodes  # topological; validates the graph

    # 1. up: everything the outputs with feedback depend on
    upstream: set[str] = set()
    stack = list(targets)
    while stack:
        node_id = stack.pop()
        if node_id in upstream:
            continue
        upstream.add(node_id)
        for edge in graph[node_id].edges:
            if edge.via in follow and edge.id not in upstream:
                stack.append(edge.id)

    # 2. down: of those, what a trainable parameter reaches (one pass in topological order)
    reached: set[str] = set()
    for node in nodes:
        if node.id not in upstream:
            continue
        if node.trainable or any(e.id in reached and e.via in follow for e in node.edges):
            reached.add(node.id)
    kept = [node for node in nodes if node.id in reached]
    variables = [node for node in kept if node.trainable]
    if not variables:
        frozen = [n.name for n in graph.parameters if not n.trainable]
        raise BackwardError(
            f"no trainable parameter lies on any path to the outputs with feedback "
            f"({', '.join(targets)}); inspected {len(upstream)} upstream nodes"
            + (f"; frozen parameters there: {frozen}" if frozen else "")
        )

    code = [node for node in kept if node.kind in ("op", "exception")]
    kept_ids = {node.id for node in kept}
    inputs: list[Node] = []
    seen_inputs: set[str] = set()
    for node in code:
        for edge in node.edges:
            if edge.id not in kept_ids and edge.id not in seen_inputs and edge.via in follow:
                seen_inputs.add(edge.id)
                inputs.append(graph[edge.id])
    outputs = [graph[node_id] for node_id in targets if node_id in kept_ids]
    output_ids = {node.id for node in outputs}
    missing = [node_id for node_id in targets if node_id not in kept_ids]
    for node_id in missing:  # feedback on an output no parameter reaches: show it as context
        if node_id not in seen_inputs:
            seen_inputs.add(node_id)
            inputs.append(graph[node_id])
    others = [node for node in code if node.id not in output_ids]
    documentation: dict[str, str] = {}
    for node in code:
        documentation.setdefault(node.name, node.doc or node.description)
    instance = ProblemInstance(graph, instruction, code, documentation, variables, inputs, others, outputs, targets)
    instance.names = _short_names(variables, inputs + code)
    return instance


_NOT_NAME = re.compile(r"[^0-9A-Za-z_]+")


def _short_names(variables: list[Node], nodes: list[Node]) -> dict[str, str]:
    """Readable unique names for the prompt: parameters keep their own (the optimizer answers with
    them); other nodes get ``<name><k>`` like Trace's ``add0``."""
    names = {node.id: node.name for node in variables}
    taken = set(names.values())
    counters: dict[str, int] = {}
    for node in nodes:
        if node.id in names:
            continue
        if node.kind == "parameter":  # a frozen parameter keeps its name too
            names[node.id] = node.name
            taken.add(node.name)
            continue
        base = _NOT_NAME.sub("_", node.name).strip("_") or node.kind
        if base[0].isdigit():
            base = "_" + base
        if base[-1].isdigit():
            base += "_"  # user_9 then reads user_9_0, never user_90
        k = counters.get(base, 0)
        while f"{base}{k}" in taken:
            k += 1
        counters[base] = k + 1
        names[node.id] = f"{base}{k}"
        taken.add(names[node.id])
    return names
