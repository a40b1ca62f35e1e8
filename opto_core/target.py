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
