"""Tracing DSPy: callback events -> plain records -> an OPTO graph (one per top-level call).

- `callback`: `DSPyTracer`, the DSPy callback users pass; it turns each event into a record
  (no DSPy object outlives the event).
- `records`: those records, plain dataclasses.
- `builder`: `GraphBuilder`, records -> the graph (imports no DSPy: testable with hand-made records).
"""

from __future__ import annotations

from opto_adapters.dspy.tracing.builder import ADAPTER, GraphBuilder, Run
from opto_adapters.dspy.tracing.callback import DSPyTracer, bound_inputs, node_names, untag_prediction
from opto_core.kernel.provenance import TaggedStr

#: Kept for callers of earlier versions: the tagged ``str`` is the core's.
TracedStr = TaggedStr

__all__ = [
    "ADAPTER",
    "DSPyTracer",
    "GraphBuilder",
    "Run",
    "TracedStr",
    "bound_inputs",
    "node_names",
    "untag_prediction",
]
