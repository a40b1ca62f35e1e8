"""What every executor shares: the evaluation record, whose failure it was, and the driver's batch.

A run either returns ``(output, graph)`` or fails; `error_kind` says whose failure it was.
The feedback function always runs on the driver (`finish`), and `_Batch` is the driver's side of
one batch for the thread and asyncio executors.
"""


from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from opto_core.kernel.feedback import Feedback
from opto_core.kernel.graph import META_USAGE, Graph

log = logging.getLogger("opto")

FeedbackFn = Callable[[Any, Any], Any]

class FeedbackError(RuntimeError):
    """The user's feedback function raised, or returned something that is not feedback."""


class InfrastructureError(RuntimeError):
    """A run failed for a reason outside the workflow's logic (event loop, connection, worker, adapter).

    Targets and executors raise (or return) it to say so explicitly; `error_kind` also recognises
    the usual suspects on its own.
    """


class EvaluationTimeout(InfrastructureError, TimeoutError):
    """A run took longer than ``eval_timeout`` seconds."""


class EvaluationCancelled(InfrastructureError):
    """The run was cancelled (Ctrl-C, the STOP file, `Executor.cancel`) before it finished."""


@dataclass
class Evaluation:
    """One example's run: its output, graph and feedback; ``error_kind`` says why it failed, if it did.

    ``usage`` is the workflow's own token use in this run (from the graph's metadata), ``seconds``
    the run's wall time where it ran, ``retried`` the causes of earlier attempts of this example
    that failed for infrastructure reasons and were retried (a dead Ray worker, a timeout), and
    ``worker`` where the final attempt ran (empty in this process).
    """

    index: int
    output: Any
    graph: Graph
    feedback: Feedback
    failed: bool = False
    error_kind: str | None = None      # None | "workflow" | "infrastructure"
    usage: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    retried: list[str] = field(default_factory=list)
    worker: str = ""


_INFRA_TYPES = ("APIConnectionError", "APITimeoutError", "ConnectError", "ConnectTimeout", "ReadTimeout",
                "RemoteProtocolError", "RayTaskError", "WorkerCrashedError", "RayActorError", "GetTimeoutError",
                "CancelledError", "InfrastructureError")
_INFRA_TEXT = ("event loop", "different loop", "Event loop is closed", "bound to a different")


def error_kind(exc: BaseException) -> str:
    """``"infrastructure"`` when the failure is not the workflow's own logic, else ``"workflow"``.

    Connection and timeout errors, event-loop errors and our own `InfrastructureError` are
    infrastructure; so is an exception chained from one of them. Everything else (a tool that
    raised, a parse error, a wrong answer's exception) is the workflow's and is feedback.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        names = {cls.__name__ for cls in type(current).__mro__}
        if names & set(_INFRA_TYPES) or isinstance(current, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return "infrastructure"
        if isinstance(current, RuntimeError) and any(t in str(current) for t in _INFRA_TEXT):
            return "infrastructure"
        current = current.__cause__ or current.__context__
        seen += 1
    return "workflow"


class NonFiniteScore(FeedbackError):
    """A NaN or infinite score: an error by default, a failed run when the user opted in."""


def score_feedback(example: Any, output: Any, feedback_fn: FeedbackFn, index: int) -> Feedback:
    """Call the user's feedback function and check what it returned (a score must be finite)."""
    try:
        raw = feedback_fn(example, output)
    except Exception as exc:
        raise FeedbackError(f"feedback_fn raised on example {index} ({_short(example)}): "
                            f"{type(exc).__name__}: {exc}") from exc
    try:
        feedback = Feedback.coerce(raw)
    except (TypeError, ValueError) as exc:
        raise FeedbackError(f"feedback_fn returned {raw!r} for example {index} ({_short(example)}): {exc}") from exc
    if feedback.score is not None and not math.isfinite(feedback.score):
        raise NonFiniteScore(f"feedback_fn returned the score {feedback.score} for example {index} "
                            f"({_short(example)}): scores must be finite numbers (pass "
                            f"nonfinite_scores='failure' to count such runs as failures)")
    return feedback


def usage_of(graph: Graph) -> dict[str, Any]:
    """The workflow's own token use recorded in a run's graph (adapters put it under ``META_USAGE``)."""
    usage = graph.meta.get(META_USAGE)
    if not isinstance(usage, dict):
        usage = graph.meta.get("token_usage")  # DSPy's per-LM totals
    return dict(usage) if isinstance(usage, dict) else {}


def finish(index: int, example: Any, output: Any, graph: Graph, feedback_fn: FeedbackFn, failure_score: float,
           seconds: float = 0.0, nonfinite: str = "error") -> Evaluation:
    """Turn one run's (output, graph) into an `Evaluation`: a raised exception is a failure, else feedback."""
    usage = usage_of(graph)
    if isinstance(output, BaseException):
        text = f"The run raised {type(output).__name__}: {output}"
        return Evaluation(index, output, graph, Feedback(failure_score, text), failed=True,
                          error_kind=error_kind(output), usage=usage, seconds=seconds)
    try:
        feedback = score_feedback(example, output, feedback_fn, index)
    except NonFiniteScore as exc:
        if nonfinite != "failure":
            raise
        return Evaluation(index, output, graph, Feedback(failure_score, f"{exc} (counted as a failed run)"),
                          failed=True, error_kind="workflow", usage=usage, seconds=seconds)
    return Evaluation(index, output, graph, feedback, usage=usage, seconds=seconds)


def failed_run(what: str, exc: BaseException) -> tuple[BaseException, Graph]:
    """(exception, graph) for a run that never produced a graph of its own (timeout, crash, cancel)."""
    graph = Graph(meta={"error": f"{type(exc).__name__}: {exc}"})
    graph.add_exception(what, exc)
    return exc, graph


def _run_one(target: Any, example: Any) -> tuple[Any, Graph]:
    try:
        return target.run(example)
    except Exception as exc:  # a target that raised instead of returning (output, graph): not the workflow's fault
        wrapped = InfrastructureError(f"the target itself raised {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        return failed_run("target.run", wrapped)


async def _arun_one(target: Any, example: Any) -> tuple[Any, Graph]:
    try:
        return await target.arun(example)
    except Exception as exc:  # arun must return (exception, graph) for the workflow's own errors
        wrapped = InfrastructureError(f"the target itself raised {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        return failed_run("target.arun", wrapped)


def check_concurrency(concurrency: Any) -> int:
    """``concurrency`` as a positive int, or a `ValueError` that says what is allowed."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1 (how many examples run at once), got {concurrency!r}")
    return concurrency


class Executor(Protocol):
    """Runs a batch of examples and returns their evaluations in order."""

    def evaluate(self, target: Any, examples: Sequence[Any], feedback_fn: FeedbackFn, *, indices: Sequence[int],
                 failure_score: float, values: dict[str, Any] | None = None) -> list[Evaluation]: ...

    def cancel(self) -> None:
        """Stop the runs in flight (Ctrl-C, a STOP file): each one not finished becomes a cancelled run."""

    def close(self) -> None: ...


class _Batch:
    """The driver's side of one batch: results in (from any thread), evaluations out in order.

    Shared by the thread and asyncio executors: each run puts ``(position, (output, graph,
    seconds))`` on ``self.done`` when it finishes (or ``(position, exception)`` if it was
    cancelled); the calling thread scores results as they arrive, enforces ``eval_timeout`` from the
    start times the runs record, and stops everything on `cancel` or Ctrl-C. One queue, so the
    driver's cost per result does not grow with the batch.
    """

    def __init__(self, examples: Sequence[Any], indices: Sequence[int], feedback_fn: FeedbackFn,
                 failure_score: float, nonfinite: str) -> None:
        self.examples, self.indices = examples, list(indices)
        self.feedback_fn, self.failure_score, self.nonfinite = feedback_fn, failure_score, nonfinite
        self.results: list[Evaluation | None] = [None] * len(examples)
        self.cancelled = threading.Event()
        self.done: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.started: dict[int, float] = {}

    def score(self, position: int, output: Any, graph: Graph, seconds: float) -> None:
        self.results[position] = finish(self.indices[position], self.examples[position], output, graph,
                                        self.feedback_fn, self.failure_score, seconds, self.nonfinite)

    def fail(self, position: int, what: str, exc: BaseException, seconds: float = 0.0) -> None:
        self.score(position, *failed_run(what, exc), seconds)

    def collect(self, timeout: float | None, cancel: Callable[[], object]) -> list[Evaluation]:
        """Wait for every run; with ``timeout``, a run that started longer ago fails (and is abandoned)."""
        remaining = set(range(len(self.examples)))
        checked = time.perf_counter()
        try:
            while remaining:
                if self.cancelled.is_set():
                    cancel()
                    for position in sorted(remaining):
                        self.fail(position, "cancelled", EvaluationCancelled("the run was cancelled"))
                    break
                try:
                    arrived = [self.done.get(timeout=0.05)]
                except queue.Empty:
                    arrived = []
                while True:  # everything else already there, without waiting again
                    try:
                        arrived.append(self.done.get_nowait())
                    except queue.Empty:
                        break
                for position, payload in arrived:
                    if position not in remaining:  # a run that already timed out
                        continue
                    remaining.discard(position)
                    if isinstance(payload, BaseException):
                        self.fail(position, "cancelled", payload)
                    else:
                        self.score(position, *payload)
                now = time.perf_counter()
                if timeout is not None and now - checked >= 0.05:
                    checked = now
                    for position in [p for p in remaining if p in self.started]:
                        if now - self.started[position] > timeout:
                            remaining.discard(position)
                            self.fail(position, "timeout", EvaluationTimeout(
                                f"the run took longer than eval_timeout={timeout:g}s"), now - self.started[position])
        except BaseException:  # Ctrl-C or a feedback error: nothing outstanding may keep running
            cancel()
            raise
        return [r for r in self.results if r is not None]


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
