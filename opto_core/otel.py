"""OpenTelemetry in and out, the public path: ``from opto_core.otel import load_spans, to_spans``.

The code lives in `opto_core.gateway.otel` (reading and writing spans) and `opto_core.gateway.offline`
(`optimize_offline`); this module only names it where users look for it.
"""

from opto_core.gateway.offline import OfflineResult, optimize_offline, values_diff
from opto_core.gateway.otel import Span, SpanTrace, Traces, load_spans, read_spans, spans_to_otlp, to_spans

__all__ = [
    "OfflineResult",
    "Span",
    "SpanTrace",
    "Traces",
    "load_spans",
    "optimize_offline",
    "read_spans",
    "spans_to_otlp",
    "to_spans",
    "values_diff",
]
