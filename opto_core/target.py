"""The target protocol: what the optimization loop needs from anything it optimizes.

Each adapter (LangChain, DSPy, AutoGen) and the plain-Python tracer implement these five
methods, and `opto_core.loop.optimize` is written once against them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .graph import Graph
from .parameters import Parameter


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
      every earlier write is undone and `opto_core.binding.WriteError` names the failing binding;
    - ``snapshot()``/``restore(s)``: exact undo, framework caches included;
    - ``save_values(path)``: the trainable values as ``opto-values/1``, for ``apply_values`` later.

    Subclasses set ``self.bound`` (and ``framework``/``framework_version`` for the values file)
    and implement ``run``.
    """

    bound: "BoundParameters"
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
        from .values import save_values

        return save_values(path, self.bound.values(), {"framework": self.framework,
                                                         "framework_version": self.framework_version, **meta})


from .binding import BoundParameters  # noqa: E402  (for the annotation; binding imports no target)
