"""Optimizing from recorded traces alone: no program is re-run, nothing is deployed.

Production traces already hold what OPTO needs: the graph of each run (`opto_core.gateway.otel.load_spans`,
or graphs the gateway recorded) and, often, a score someone or something gave it. One optimizer step
over them proposes new values:

    traces = load_spans("traces.json", feedback_attribute="eval.score")
    result = optimize_offline(traces, None, OptoPrime(traces.parameters.parameters(), OpenAIChat()))
    # result.values_path: an opto-values/1 file that `opto gateway --values` serves
    # result.diff_path:   a unified diff of every changed value, for review

The step is the loop's own: `backward` on each graph with its feedback gives the problem instances,
the optimizer proposes, and each value is validated by its `Parameter`. Graphs without feedback, or
where no trainable parameter reaches the output, are left out and counted (``skipped``), said once.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from opto_core.kernel.backward import BackwardError, backward
from opto_core.kernel.feedback import Feedback
from opto_core.kernel.graph import Graph

log = logging.getLogger("opto.gateway")


@dataclass
class OfflineResult:
    """What one offline step proposed, and where it was written."""

    proposal: Any
    values: dict[str, Any]
    changed: dict[str, Any]
    values_path: Path | None
    diff_path: Path | None
    diff: str
    used: int
    skipped: dict[str, int] = field(default_factory=dict)


def optimize_offline(
    graphs: Sequence[Graph],
    feedback_fn: Callable[[Graph], Any] | None,
    optimizer: Any,
    *,
    parameters: Any = None,
    values_path: str | Path | None = "offline.values.json",
    diff_path: str | Path | None = None,
) -> OfflineResult:
    """Propose values from recorded graphs with one optimizer step; write a values file and a diff.

    ``feedback_fn(graph)`` gives each graph's feedback (a score, a text, a pair, a `Feedback`); with
    ``None``, the feedback the import attached (``graph.meta["feedback"]``) is used. ``parameters``
    (the `TrafficParameters` the graphs were built with; default ``graphs.parameters`` when the graphs
    come from `load_spans`) writes its rules into the values file, so a gateway can serve it.
    ``diff_path`` defaults to the values file with ``.diff``. Nothing is applied anywhere.
    """
    parameters = parameters if parameters is not None else getattr(graphs, "parameters", None)
    instances = []
    skipped: dict[str, int] = {}
    for graph in graphs:
        raw = feedback_fn(graph) if feedback_fn is not None else graph.meta.get("feedback")
        if raw is None:
            skipped["no feedback"] = skipped.get("no feedback", 0) + 1
            continue
        try:
            instances.append(backward(graph, Feedback.coerce(raw)))
        except BackwardError:
            skipped["no trainable parameter reaches the output"] = (
                skipped.get("no trainable parameter reaches the output", 0) + 1
            )
    if skipped:
        log.warning(
            "optimize_offline: %d of %d graphs left out (%s)",
            sum(skipped.values()),
            len(graphs),
            ", ".join(f"{n}: {why}" for why, n in skipped.items()),
        )
    if not instances:
        raise ValueError(
            f"optimize_offline: none of the {len(graphs)} graphs has feedback that reaches a trainable "
            f"parameter ({skipped}); give feedback_fn, or feedback_attribute= to load_spans"
        )
    if parameters is not None:
        before = parameters.bound.values()
    else:  # graphs built elsewhere: the values the optimizer starts from
        before = optimizer.current_values() if hasattr(optimizer, "current_values") else {}
    proposal = optimizer.step(instances)
    values = {**before, **proposal.accepted}
    changed = {name: value for name, value in proposal.accepted.items() if before.get(name) != value}
    diff = values_diff(before, values)
    written_values = written_diff = None
    if values_path is not None:
        if parameters is not None:
            written_values = Path(
                parameters.save_values(str(values_path), values, source="optimize_offline", graphs=len(instances))
            )
        else:
            from opto_core.kernel.values import save_values

            written_values = save_values(values_path, values, {"framework": "gateway", "source": "optimize_offline"})
        written_diff = Path(diff_path) if diff_path is not None else written_values.with_suffix(".diff")
        written_diff.write_text(diff, encoding="utf-8")
    return OfflineResult(proposal, values, changed, written_values, written_diff, diff, len(instances), skipped)


def values_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A unified diff of every value that changed, one file section per parameter."""
    chunks = []
    for name in after:
        old, new = before.get(name), after[name]
        if old == new:
            continue
        lines = difflib.unified_diff(
            _lines(old), _lines(new), fromfile=f"{name} (current)", tofile=f"{name} (proposed)", lineterm=""
        )
        chunks.append("\n".join(lines))
    return "\n".join(chunks) + ("\n" if chunks else "")


def _lines(value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return text.splitlines() or [""]
