"""Coverage: which trainable parameters feedback can reach, and why the others cannot.

Backward credits a parameter only when a path of edges leads from its node to an output that got
feedback. A parameter off every such path is never shown to the optimizer: it keeps its value
however bad it is, and a run that "kept" its values says nothing about it. This module says so
out loud, with the reason and the fix, before any optimizer call:

- `coverage(target, examples)` runs the examples once and returns a `Coverage`;
- `Coverage.of(parameters, evaluations)` judges runs already made (the loop's first evaluation:
  `opto_core.engine.loop.optimize` logs one warning naming every unreached parameter, stores the
  coverage in the step record and, with ``require_coverage=True``, stops before the optimizer).

For each parameter, across the runs judged, the first cause that applies:

=================  ==========================================================================
``reached``        feedback reaches it in at least one run; ``path`` names the nodes from it
                   to the output (in the first such run)
``frozen``         it is not trainable (``trainable=False``, or left out by include/exclude)
``excluded_edges`` it reaches the output only through edge kinds that ``follow`` leaves out
``off_path``       its node feeds steps, none of which leads to the output that got feedback
``unlinked``       its value was never seen in any call: its node is in the graph, linked to no step
``never_seen``     its value was never seen in any call: no run's graph holds it at all
``not_judged``     every run failed outside the workflow (connection, timeout): nothing to judge
=================  ==========================================================================

A target may give better fixes for its framework: a method ``coverage_fix(parameter, cause)``
returning a sentence (or ``None`` for the default one below).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from opto_core.kernel.backward import ALL_EDGES, BackwardError, feedback_targets
from opto_core.kernel.feedback import Feedback
from opto_core.kernel.graph import Graph, Node

log = logging.getLogger("opto")

__all__ = ["Coverage", "CoverageError", "ParameterCoverage", "coverage"]

REACHED, FROZEN, EXCLUDED_EDGES, OFF_PATH = "reached", "frozen", "excluded_edges", "off_path"
UNLINKED, NEVER_SEEN, NOT_JUDGED = "unlinked", "never_seen", "not_judged"
#: The causes of an unreached parameter, most informative first (the first seen in any run is reported).
_ORDER = (EXCLUDED_EDGES, OFF_PATH, UNLINKED, NEVER_SEEN)

#: Said of an output that has no recorded inputs (computed outside every traced step).
UNTRACED_OUTPUT = "; the output itself has no recorded inputs: it was computed outside every traced step"

#: What to try, per cause (a target's ``coverage_fix`` may say it better for its framework).
FIXES = {
    FROZEN: "include it (include=[...]) or remove it from exclude=[...] to let the optimizer change it",
    EXCLUDED_EDGES: "add those edge kinds to Settings.follow (follow=None follows every kind)",
    OFF_PATH: "make the returned answer depend on those steps, or mark the step that produces the answer as the "
    "output; check that feedback is given on that output",
    UNLINKED: "provenance could not find where its value went: if the program fills it in "
    "(TEMPLATE.format(...), %, string.Template, Jinja) make it a template parameter "
    "(Parameter(..., template=True)); if you pass it yourself, pass the Parameter to the step "
    "(an @op argument) or name the step that sends it with meta={'used_by': <step>}",
    NEVER_SEEN: "make sure the program reads it while it runs: read parameter.value inside a traced step (or pass "
    "the Parameter to an @op), and for a parameter of yours name the step that sends it with "
    "meta={'used_by': <step>}; a value the program formats first needs template=True",
    NOT_JUDGED: "fix the connection or the server and run the coverage check again",
}


class CoverageError(RuntimeError):
    """Feedback cannot reach the trainable parameters (all of them, or those ``require_coverage`` demands).

    Raised before any optimizer call; ``coverage`` holds the full `Coverage`.
    """

    def __init__(self, message: str, coverage: Coverage) -> None:
        super().__init__(message)
        self.coverage = coverage


@dataclass
class ParameterCoverage:
    """Whether feedback reaches one parameter: by which path, or why not and what to try."""

    name: str
    trainable: bool
    reached: bool
    cause: str
    path: list[str] = field(default_factory=list)
    reason: str = ""
    fix: str = ""
    runs: int = 0  # runs judged
    runs_reached: int = 0  # runs in which feedback reached it

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "reached": self.reached,
            "cause": self.cause,
            "path": list(self.path),
            "reason": self.reason,
            "fix": self.fix,
            "runs": self.runs,
            "runs_reached": self.runs_reached,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParameterCoverage:
        return cls(
            str(data.get("name", "?")),
            bool(data.get("trainable", True)),
            bool(data.get("reached")),
            str(data.get("cause", "")),
            [str(p) for p in data.get("path") or []],
            str(data.get("reason", "")),
            str(data.get("fix", "")),
            int(data.get("runs") or 0),
            int(data.get("runs_reached") or 0),
        )


@dataclass
class Coverage:
    """Per parameter, whether feedback reaches it (`ParameterCoverage`), over ``runs`` runs."""

    parameters: list[ParameterCoverage]
    runs: int = 0
    failed_runs: int = 0
    note: str = ""  # why the runs could not be judged, when they could not

    # ----- reading --------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> ParameterCoverage:
        for entry in self.parameters:
            if entry.name == name:
                return entry
        raise KeyError(f"no parameter {name!r}; the parameters are {[p.name for p in self.parameters]}")

    def __iter__(self) -> Any:
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    @property
    def reached(self) -> list[str]:
        """Names of the trainable parameters feedback reaches."""
        return [p.name for p in self.parameters if p.trainable and p.reached]

    @property
    def unreached(self) -> list[str]:
        """Names of the trainable parameters feedback does not reach (the ones to worry about)."""
        return [p.name for p in self.parameters if p.trainable and not p.reached]

    @property
    def judged(self) -> bool:
        return not self.note

    @property
    def complete(self) -> bool:
        """Whether feedback reaches every trainable parameter."""
        return self.judged and not self.unreached

    # ----- saying it ----------------------------------------------------------------------------------
    def warning(self) -> str:
        """One message naming every unreached trainable parameter with its reason and fix ("" if none)."""
        if not self.judged:
            return f"coverage could not be judged: {self.note}"
        missing = [p for p in self.parameters if p.trainable and not p.reached]
        if not missing:
            return ""
        lines = [
            f"feedback cannot reach {len(missing)} of {len(missing) + len(self.reached)} trainable "
            f"parameter(s) in {self.runs} run(s); the optimizer will never see them:"
        ]
        for entry in missing:
            lines.append(f"  - {entry.name}: {entry.reason}. Fix: {entry.fix}")
        return "\n".join(lines)

    def enforce(self, require: bool = False) -> None:
        """Log the warning once; raise `CoverageError` when nothing is reachable, or (``require``) anything is not."""
        if not self.judged:
            log.warning("%s", self.warning())
            return
        text = self.warning()
        if text and (require or not self.reached):
            why = (
                "no trainable parameter is reachable, so the optimizer would have nothing to change"
                if not self.reached
                else "require_coverage=True and some parameters are unreachable"
            )
            raise CoverageError(f"stopped before any optimizer call: {why}.\n{text}", self)
        if text:
            log.warning("%s", text)
        else:
            log.info("coverage: feedback reaches all %d trainable parameter(s)", len(self.reached))

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "failed_runs": self.failed_runs,
            "note": self.note,
            "reached": self.reached,
            "unreached": self.unreached,
            "parameters": [entry.to_dict() for entry in self.parameters],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Coverage:
        return cls(
            [ParameterCoverage.from_dict(p) for p in data.get("parameters") or [] if isinstance(p, dict)],
            int(data.get("runs") or 0),
            int(data.get("failed_runs") or 0),
            str(data.get("note") or ""),
        )

    def __str__(self) -> str:
        head = (
            f"Coverage over {self.runs} run(s): feedback reaches {len(self.reached)} of "
            f"{len(self.reached) + len(self.unreached)} trainable parameter(s)"
        )
        if self.failed_runs:
            head += f" ({self.failed_runs} run(s) failed)"
        if not self.judged:
            head += f"\n  not judged: {self.note}"
        rows = [("parameter", "reached", "path to the output / why not")]
        for entry in self.parameters:
            mark = (
                f"yes {entry.runs_reached}/{entry.runs}"
                if entry.reached
                else "frozen"
                if entry.cause == FROZEN
                else "NO"
            )
            rows.append((entry.name, mark, " -> ".join(entry.path) if entry.reached else entry.reason))
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [head]
        for row in rows:
            lines.append(f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
        for entry in self.parameters:
            if entry.trainable and not entry.reached:
                lines.append(f"  fix {entry.name}: {entry.fix}")
        return "\n".join(lines)

    # ----- judging runs -----------------------------------------------------------------------------
    @classmethod
    def of(
        cls,
        parameters: Iterable[Any],
        evaluations: Sequence[Any],
        *,
        follow: Iterable[str] | None = None,
        target: Any = None,
    ) -> Coverage:
        """Judge runs already made: ``evaluations`` with ``.graph`` and ``.feedback`` (and ``.error_kind``).

        Runs that failed outside the workflow (infrastructure) are left out; if no run is left,
        the coverage is not judged (``note`` says why).
        """
        usable = [e for e in evaluations if getattr(e, "error_kind", None) != "infrastructure"]
        runs = [(e.graph, e.feedback) for e in usable]
        failed = sum(bool(getattr(e, "failed", False)) for e in evaluations)
        note = ""
        if evaluations and not usable:
            note = (
                f"every run ({len(evaluations)}) failed outside the workflow, e.g. "
                f"{_error_text(evaluations[0].output)}; {FIXES[NOT_JUDGED]}"
            )
        return cls.of_graphs(parameters, runs, follow=follow, target=target, failed_runs=failed, note=note)

    @classmethod
    def of_graphs(
        cls,
        parameters: Iterable[Any],
        runs: Sequence[Graph | tuple[Graph, Any]],
        *,
        follow: Iterable[str] | None = None,
        target: Any = None,
        failed_runs: int = 0,
        note: str = "",
    ) -> Coverage:
        """Judge graphs (each with its feedback, or alone: every output then counts as judged)."""
        follow = frozenset(follow) if follow else frozenset(ALL_EDGES)
        judged = [
            _Run(run[0], run[1], follow)
            if isinstance(run, tuple)
            else _Run(run, Feedback(text="coverage check"), follow)
            for run in runs
        ]
        entries = [_judge(parameter, judged, follow, target) for parameter in parameters]
        return cls(entries, len(judged), failed_runs, note)


def coverage(
    target: Any,
    examples: Sequence[Any],
    feedback_fn: Any = None,
    *,
    follow: Iterable[str] | None = None,
    num_threads: int = 1,
) -> Coverage:
    """Run ``examples`` once through ``target`` and say, per parameter, whether feedback reaches it.

    ``feedback_fn(example, output)`` is optional: without it every output counts as judged (the
    check is about paths, not scores). ``follow`` is the edge kinds backward will follow (as
    ``Settings.follow``). Nothing is optimized and no optimizer is called.
    """
    from opto_core.engine.executors import ThreadExecutor

    examples = list(examples)
    if not examples:
        raise ValueError("coverage needs at least one example to run")
    judge = feedback_fn if feedback_fn is not None else (lambda example, output: Feedback(text="coverage check"))
    evaluations = ThreadExecutor(num_threads).evaluate(
        target, examples, judge, indices=list(range(len(examples))), failure_score=0.0
    )
    return Coverage.of(target.parameters(), evaluations, follow=follow, target=target)


# ----- one run's graph ----------------------------------------------------------------------------------------
class _Run:
    """One graph, ready to answer "does this parameter's node reach an output with feedback?"."""

    def __init__(self, graph: Graph, feedback: Any, follow: frozenset[str]) -> None:
        self.graph = graph
        try:
            self.targets = set(feedback_targets(graph, feedback))
        except BackwardError:  # no output at all: nothing is reachable in this run
            self.targets = set()
        self.children: dict[str, list[tuple[str, str]]] = {}
        for node in graph.nodes:
            for edge in node.edges:
                self.children.setdefault(edge.id, []).append((node.id, edge.via))
        self.by_name = {node.name: node for node in graph.parameters}
        self.follow = follow
        self.error = next((n.value for n in graph.of_kind("exception")), None)

    def node(self, name: str) -> Node | None:
        node = self.graph.get(f"param:{name}")
        return node if node is not None and node.kind == "parameter" else self.by_name.get(name)

    def path(self, start: str, kinds: frozenset[str]) -> list[str] | None:
        """Node ids from ``start`` to an output with feedback along edges of ``kinds`` (shortest), or None."""
        before: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            if current in self.targets:
                ids = [current]
                parent = before[current]
                while parent is not None:
                    ids.append(parent)
                    parent = before[parent]
                return ids[::-1]
            for child, via in self.children.get(current, ()):
                if via in kinds and child not in before:
                    before[child] = current
                    queue.append(child)
        return None

    def via(self, parent: str, child: str) -> str:
        """The kind of the edge ``parent -> child`` (``data`` when several, as backward would follow it)."""
        kinds = [edge.via for edge in self.graph[child].edges if edge.id == parent]
        return "data" if "data" in kinds or not kinds else kinds[0]

    def names(self, ids: list[str]) -> list[str]:
        """Node names along a path; the last (the node that got feedback) marked ``(output)``."""
        names = [self.graph[i].name for i in ids]
        return names[:-1] + [f"{names[-1]} (output)"]


def _judge(parameter: Any, runs: list[_Run], follow: frozenset[str], target: Any) -> ParameterCoverage:
    name, trainable = parameter.name, bool(parameter.trainable)
    entry = ParameterCoverage(name, trainable, False, NEVER_SEEN, runs=len(runs))
    causes: dict[str, str] = {}  # cause -> detail, from the first run that shows it
    for run in runs:
        node = run.node(name)
        if node is None:
            causes.setdefault(NEVER_SEEN, "")
            continue
        ids = run.path(node.id, follow)
        if ids is not None:
            entry.runs_reached += 1
            if not entry.path:
                entry.path = run.names(ids)
            continue
        anyhow = run.path(node.id, frozenset(ALL_EDGES))
        if anyhow is not None:
            kinds = {run.via(parent, child) for parent, child in zip(anyhow, anyhow[1:])} - follow
            causes.setdefault(EXCLUDED_EDGES, ", ".join(f"'{kind}'" for kind in sorted(kinds)))
        elif run.children.get(node.id):
            fed = sorted({run.graph[child].name for child, _ in run.children[node.id]})
            detail = ", ".join(fed[:5]) + (" ..." if len(fed) > 5 else "")
            if run.targets and all(not run.graph[t].edges for t in run.targets):
                detail += UNTRACED_OUTPUT
            causes.setdefault(OFF_PATH, detail)
        else:
            causes.setdefault(UNLINKED, "")
    failed = [run.error for run in runs if run.error is not None]
    if not trainable:
        entry.cause, entry.reason = FROZEN, "excluded: frozen (trainable=False, or left out by include/exclude)"
    elif entry.runs_reached:
        entry.reached, entry.cause = True, REACHED
    else:
        entry.cause = next((c for c in _ORDER if c in causes), NEVER_SEEN)
        entry.reason = _reason(entry.cause, causes.get(entry.cause, ""), len(runs), failed)
    if not entry.reached:
        custom = getattr(target, "coverage_fix", None)
        fix = custom(parameter, entry.cause) if callable(custom) else None
        if fix is None and entry.cause == OFF_PATH and UNTRACED_OUTPUT in causes[OFF_PATH]:
            fix = (
                "compute the returned value inside a traced step (an @op, or a call the adapter traces), so the "
                "output depends on the steps that made it"
            )
        entry.fix = fix or FIXES.get(entry.cause, "")
    return entry


def _reason(cause: str, detail: str, runs: int, failed: list[Any]) -> str:
    if cause == EXCLUDED_EDGES:
        return f"seen off the path to the output: it reaches the output only through {detail} edges, which follow= leaves out"
    if cause == OFF_PATH:
        return (
            f"seen off the path to the output: it feeds {detail.replace(UNTRACED_OUTPUT, '')}, and none of them "
            f"leads to the output that got feedback" + (UNTRACED_OUTPUT if UNTRACED_OUTPUT in detail else "")
        )
    if cause == UNLINKED:
        text = f"its value was never seen in any call: in {runs} run(s) no step was found to receive it"
    else:
        text = f"its value was never seen in any call: none of the {runs} run(s) recorded it"
    if failed:
        text += f"; {len(failed)} of them raised, perhaps before using it: {str(failed[0])[:200]}"
    return text


def _error_text(output: Any) -> str:
    return f"{type(output).__name__}: {output}" if isinstance(output, BaseException) else str(output)[:200]
