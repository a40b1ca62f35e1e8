"""Trace's numerical optimization on random computation graphs (metric: absolute error).

A random program (seeded) combines two inputs ``a``, ``b`` and a few float parameters with
``add``, ``subtract``, ``multiply`` and ``negate``. Hidden parameter values define the targets:
each example is ``{"a", "b", "target"}`` with ``target = program(a, b; hidden values)``. The
optimizer starts from other values and sees the trace and feedback such as "the output is
3.2, the target is 1.5: it should be smaller by 1.7". The metric is the mean absolute error
(lower is better; the loop maximizes its negative). No task model is involved: only the
optimizer's LLM.

The program exists as traced plain Python (`python_target`) and as trace-opt bundles
(`trace_program`), both built from the same step list.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from opto_core.kernel.feedback import Feedback
from opto_core.kernel.parameters import Parameter


def add(x: float, y: float) -> float:
    """x + y"""
    return x + y


def subtract(x: float, y: float) -> float:
    """x - y"""
    return x - y


def multiply(x: float, y: float) -> float:
    """x * y"""
    return x * y


def negate(x: float) -> float:
    """-x"""
    return -x


OPS = {"add": add, "subtract": subtract, "multiply": multiply, "negate": negate}
BOUND = 10.0


@dataclass
class RandomGraph:
    """A random program: ``steps`` are ``(result name, op name, operand names)`` in order."""

    params: list[str]
    hidden: dict[str, float]
    initial: dict[str, float]
    steps: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.steps[-1][0]

    def evaluate(self, a: float, b: float, values: dict[str, float]) -> float:
        env: dict[str, float] = {"a": a, "b": b, **values}
        for result, name, operands in self.steps:
            env[result] = OPS[name](*(env[o] for o in operands))
        return env[self.output]

    def describe(self) -> str:
        return "\n".join(f"{r} = {n}({', '.join(o)})" for r, n, o in self.steps)


def random_graph(seed: int, n_ops: int = 6, n_params: int = 2) -> RandomGraph:
    """A random graph in which every parameter reaches the output and changing them changes it."""
    rng = random.Random(f"numeric:{seed}:{n_ops}:{n_params}")
    for _ in range(1000):
        params = [f"x{i}" for i in range(n_params)]
        names = ["a", "b", *params]
        steps: list[tuple[str, str, tuple[str, ...]]] = []
        multiplies = 0
        for index in range(n_ops):
            op = rng.choices(["add", "subtract", "multiply", "negate"], [4, 4, 2, 1])[0]
            if op == "multiply":
                multiplies += 1
            recent = names[-3:] if index else names
            first = rng.choice(recent)  # keep the chain connected
            second = rng.choice(names)
            operands = (first,) if op == "negate" else (first, second)
            if op != "negate" and first == second:
                continue
            result = f"v{index}"
            steps.append((result, op, operands))
            names.append(result)
        if len(steps) < max(2, n_ops - 1) or multiplies > 2:
            continue
        graph = RandomGraph(
            params, {p: round(rng.uniform(-3, 3), 1) for p in params}, dict.fromkeys(params, 1.0), steps
        )
        if _all_params_matter(graph, rng):
            return graph
    raise RuntimeError("could not generate a random graph in which every parameter matters")


def _all_params_matter(graph: RandomGraph, rng: random.Random) -> bool:
    probes = [(rng.uniform(-2, 2), rng.uniform(-2, 2)) for _ in range(3)]
    for p in graph.params:
        moved = dict(graph.hidden, **{p: graph.hidden[p] + 1.0})
        if all(abs(graph.evaluate(a, b, moved) - graph.evaluate(a, b, graph.hidden)) < 1e-6 for a, b in probes):
            return False
    base = [graph.evaluate(a, b, graph.initial) for a, b in probes]
    target = [graph.evaluate(a, b, graph.hidden) for a, b in probes]
    return any(abs(x - y) > 0.5 for x, y in zip(base, target)) and max(abs(t) for t in target) < 200


def examples(graph: RandomGraph, n: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(f"numeric-examples:{seed}")
    out = []
    for _ in range(n):
        a, b = round(rng.uniform(-2, 2), 2), round(rng.uniform(-2, 2), 2)
        out.append({"a": a, "b": b, "target": round(graph.evaluate(a, b, graph.hidden), 6)})
    return out


def splits(
    sizes: tuple[int, int, int], seed: int = 0, n_ops: int = 6, n_params: int = 2
) -> tuple[RandomGraph, list, list, list]:
    graph = random_graph(seed, n_ops, n_params)
    pool = examples(graph, sum(sizes), seed)
    train, val = sizes[0], sizes[0] + sizes[1]
    return graph, pool[:train], pool[train:val], pool[val:]


def feedback(example: dict[str, float], output: Any) -> Feedback:
    """Score = minus the absolute error; the text gives the direction and the size of the miss."""
    try:
        value = float(output)
    except (TypeError, ValueError):
        return Feedback(-100.0, f"The output {output!r} is not a number; the target is {example['target']:.4g}.")
    error = value - example["target"]
    if abs(error) < 1e-6:
        return Feedback(0.0, f"The output {value:.4g} equals the target.")
    direction = "smaller" if error > 0 else "larger"
    return Feedback(
        -min(abs(error), 100.0),
        f"The output is {value:.4g} but the target is {example['target']:.4g}: "
        f"it should be {direction} by {abs(error):.4g}.",
    )


def python_target(graph: RandomGraph) -> Any:
    """Traced plain Python: each step is an op; the parameters are floats in [-10, 10]."""
    from opto_core.engine.target import FunctionTarget
    from opto_core.kernel.trace import op

    traced = {name: op(fn) for name, fn in OPS.items()}
    parameters = {
        p: Parameter(p, "float", graph.initial[p], lower=-BOUND, upper=BOUND, description="a number in the computation")
        for p in graph.params
    }

    def program(a: float, b: float) -> float:
        env: dict[str, Any] = {"a": a, "b": b, **parameters}
        for result, name, operands in graph.steps:
            env[result] = traced[name](*(env[o] for o in operands))
        return env[graph.output]

    return FunctionTarget(program, list(parameters.values()), input_keys=["a", "b"])


def trace_program(graph: RandomGraph) -> Any:
    """The same graph with trace-opt nodes and bundles."""
    from opto import trace

    from bench.tasks.traceopt import TraceProgram

    bundles = {name: trace.bundle()(fn) for name, fn in OPS.items()}
    parameters = {
        p: trace.node(
            graph.initial[p],
            trainable=True,
            name=p,
            description=f"[ParameterNode] a number in the computation, in [-{BOUND}, {BOUND}]",
        )
        for p in graph.params
    }

    def forward(example: dict[str, float]) -> Any:
        env: dict[str, Any] = {
            "a": trace.node(example["a"], name="a"),
            "b": trace.node(example["b"], name="b"),
            **parameters,
        }
        for result, name, operands in graph.steps:
            env[result] = bundles[name](*(env[o] for o in operands))
        return env[graph.output]

    def clamp(values: dict[Any, Any]) -> dict[Any, Any]:
        return {node: max(-BOUND, min(BOUND, float(v))) for node, v in values.items()}

    return TraceProgram(forward, list(parameters.values()), postprocess=clamp)
