"""The kernel: what an OPTO run *is*, with no I/O beyond files and no model.

Holds the graph (a run as a DAG, its JSON form and meta vocabulary), parameters (what may change
and the rules a value must pass), code values (source, shape, the static policy, compiling like
the original), binding (writing values into a live workflow, with undo), templates (text with placeholders and
the texts it produced), provenance (which step produced a value), tracing of plain Python, the conversation builder (recorded calls -> graph),
backward (feedback -> problem instance), render (the instance as text within a token budget),
token counting, values files (``opto-values/1``), atomic file writes and secret redaction.

May import: the standard library and pydantic only. Nothing from the other layers.
"""
