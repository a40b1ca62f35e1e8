"""The target protocol: what the optimization loop needs from anything it optimizes.

Each adapter (LangChain, DSPy, AutoGen) and the plain-Python tracer implement these five
methods, and `opto_core.engine.loop.optimize` is written once against them.
"""

from __future__ import annotations

import platform
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from opto_core.kernel.binding import BoundParameters
from opto_core.kernel.graph import Graph
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.provenance import untag
from opto_core.kernel.trace import TracedOp, capture


@runtime_checkable
class Target(Protocol):
    """A workflow with parameters that can be run traced, changed, and changed back."""

    def parameters(self) -> list[Parameter]:
        """Every parameter (trainable or not), each ``.value`` being the current value."""

    def run(self, example: Any) -> tuple[Any, Graph]:
        """Run the workflow on one example with tracing; return its output and its graph.

        Must be safe to call from several threads at once. If the workflow raises, return the
        exception instance as the output and a graph whose ``exception`` node is marked as an
        output: a failure is feedback, not a crash of the loop.
        """

    def apply(self, updates: dict[str, Any]) -> None:
        """Write already-validated values (by parameter name) into the live workflow."""

    def snapshot(self) -> Any:
        """Capture every parameter's current value so that `restore` can undo later writes."""

    def restore(self, snapshot: Any) -> None:
        """Put back exactly what `snapshot` captured."""


class BoundTarget:
    """A base for targets whose parameters live in a `BoundParameters` (every adapter's target).

    It implements the write half of the protocol once, so every target has one contract:

    - ``parameters()``: the same `Parameter` objects on every call, values read from the live objects;
    - ``apply(updates)``: validates every value first (unknown or frozen names and invalid values
      raise before anything is written), then writes in parameter order; if one write fails,
      every earlier write is undone and `opto_core.kernel.binding.WriteError` names the failing binding;
    - ``snapshot()``/``restore(s)``: exact undo, framework caches included;
    - ``save_values(path)``: the trainable values as ``opto-values/1``, for ``apply_values`` later.

    Subclasses set ``self.bound`` (and ``framework``/``framework_version`` for the values file)
    and implement ``run``.
    """

    bound: BoundParameters
    framework: str = "python"
    framework_version: str = ""

    def parameters(self) -> list[Parameter]:
        return self.bound.parameters()

    def apply(self, updates: dict[str, Any]) -> None:
        self.bound.apply(updates)

    def snapshot(self) -> Any:
        return self.bound.snapshot()

    def restore(self, snapshot: Any) -> None:
        self.bound.restore(snapshot)

    def values(self) -> dict[str, Any]:
        return self.bound.values()

    def save_values(self, path: str, **meta: Any) -> Any:
        from opto_core.kernel.values import save_values

        return save_values(
            path,
            self.bound.values(),
            {"framework": self.framework, "framework_version": self.framework_version, **meta},
        )


class FunctionTarget(BoundTarget):
    """A plain-Python workflow as an optimization target (a `BoundTarget`).

    ``fn(**example)`` (or ``fn(example)`` for a non-dict example) is run under `capture`; the
    example's fields enter as ``input`` nodes and the return value is the output. ``input_keys``
    picks the fields passed to ``fn`` (the rest, such as labels, stay for the feedback function).
    Parameters are the `Parameter` objects given, plus the code parameter of every trainable op given.
    They live in the `Parameter` objects themselves (no bindings): the workflow reads
    ``parameter.value`` when it runs, so writing, validating and undoing are `BoundParameters`' own.
    """

    framework = "python"
    framework_version = platform.python_version()

    def __init__(
        self,
        fn: Callable[..., Any],
        parameters: Sequence[Parameter | TracedOp] = (),
        input_keys: list[str] | None = None,
    ) -> None:
        self.fn = fn
        self.input_keys = list(input_keys) if input_keys is not None else None
        found: list[Parameter] = []
        for item in parameters:
            parameter = item.code if isinstance(item, TracedOp) else item
            if parameter is None:
                raise ValueError(f"op {item.name!r} is not trainable; use @op(trainable=True)")
            found.append(parameter)
        names = [p.name for p in found]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"parameter names must be unique, repeated: {sorted(duplicates)}")
        self.bound = BoundParameters(found)

    def coverage_fix(self, parameter: Parameter, cause: str) -> str | None:
        """What to try when feedback misses a parameter of a plain-Python workflow (`opto_core.coverage`)."""
        if cause in ("unlinked", "never_seen"):
            return (
                f"pass the Parameter {parameter.name!r} itself to the @op that uses it (the op reads its value "
                f"and records the edge) instead of reading .value outside an op"
            )
        return None

    def run(self, example: Any) -> tuple[Any, Graph]:
        with capture(meta={"target": getattr(self.fn, "__qualname__", repr(self.fn))}) as run:
            for parameter in self.bound:
                run.graph.add_parameter(parameter)
            try:
                if isinstance(example, dict):
                    keys = self.input_keys if self.input_keys is not None else list(example)
                    result = self.fn(**{k: run.input(k, example[k]) for k in keys})
                else:
                    result = self.fn(run.input("x", example))
            except Exception as exc:
                if not run.graph.outputs:  # raised outside any op
                    run.graph.add_exception(getattr(self.fn, "__name__", "workflow"), exc)
                return exc, run.graph
            run.mark_output(result)
        return untag(result), run.graph
