"""What a run reports while it runs: typed events for a live display, a tracker, or a user's callback.

``optimize(..., on_event=callback)`` calls ``callback(event)`` on the driver's thread, in order:

    RunStarted
    StepStarted(step)            for each step
      EvaluationDone(i, total)   after each workflow run of the step's batch, then of its check
      ProviderRetrying           when runs that failed on the model provider are about to run again
      OptimizerCallStarted       the optimizer's LLM call (a proposal) is in flight
      OptimizerCallFinished      with its seconds, tokens and cost
    StepDecided(record)          kept or rolled back, and why
    RunFinished(result)

``EvaluationDone`` also reports the initial evaluation (``step == 0``). Every event carries the
run's usage so far (the optimizer's calls, tokens, USD) and the best score so far where it has one,
so a display needs no state of its own. A callback that raises is reported once in the log and
then left out; it never stops the run. ``progress=True`` is this same stream shown as one live line
(`opto_core.engine.progress`).
"""

from __future__ import annotations

import contextvars
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

log = logging.getLogger("opto")

__all__ = [
    "EvaluationDone",
    "OptimizerCallFinished",
    "OptimizerCallStarted",
    "ProviderRetrying",
    "RunEvent",
    "RunFinished",
    "RunStarted",
    "StepDecided",
    "StepStarted",
    "Emitter",
]


@dataclass(frozen=True)
class RunEvent:
    """What every event has: the step it belongs to (0: the initial evaluation), the wall time,
    the optimizer's usage so far (``calls``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd``),
    and the best score so far (None before there is one)."""

    step: int
    usage: dict[str, Any] = field(default_factory=dict)
    best_score: float | None = None
    time: float = field(default_factory=time.time)

    @property
    def tokens(self) -> int:
        """The optimizer's prompt and completion tokens so far."""
        return int(self.usage.get("prompt_tokens", 0) or 0) + int(self.usage.get("completion_tokens", 0) or 0)

    @property
    def cost_usd(self) -> float:
        return float(self.usage.get("cost_usd", 0.0) or 0.0)


@dataclass(frozen=True)
class RunStarted(RunEvent):
    """The run begins (``resumed``: after step ``step`` of an earlier run) and will end by ``max_steps``."""

    max_steps: int = 0
    resumed: bool = False
    run_dir: str | None = None
    trainset_size: int = 0
    valset_size: int = 0


@dataclass(frozen=True)
class StepStarted(RunEvent):
    """Step ``step`` of ``max_steps`` begins; it will make about ``runs`` workflow runs."""

    max_steps: int = 0
    runs: int = 0


@dataclass(frozen=True)
class EvaluationDone(RunEvent):
    """One workflow run of the current evaluation finished: ``done`` of ``total``. ``which`` is
    ``"initial"``, ``"batch"`` (the step's training batch) or ``"check"`` (the step's judgement);
    ``failed`` counts the failed runs so far."""

    done: int = 0
    total: int = 0
    which: str = ""
    failed: int = 0


@dataclass(frozen=True)
class ProviderRetrying(RunEvent):
    """Runs that failed on the model provider run again after ``wait`` seconds; ``message`` says why."""

    message: str = ""
    wait: float = 0.0


@dataclass(frozen=True)
class OptimizerCallStarted(RunEvent):
    """The optimizer was asked for a proposal; its LLM call is in flight."""


@dataclass(frozen=True)
class OptimizerCallFinished(RunEvent):
    """The proposal came back after ``seconds``, using ``tokens`` and ``cost_usd`` of its own (the
    event's ``usage`` is the run's total); ``error`` when the call failed."""

    seconds: float = 0.0
    call_tokens: int = 0
    call_cost_usd: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class StepDecided(RunEvent):
    """The step ended: ``kept`` or not, ``decision`` (why), the score it was judged on, and the full
    step ``record`` (as in ``history.jsonl``)."""

    kept: bool = False
    decision: str = ""
    score: float | None = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFinished(RunEvent):
    """The run ended; ``result`` is the `OptimizationResult` that `optimize` returns."""

    result: Any = None


Listener = Callable[[RunEvent], Any]
#: The per-run listener of the evaluation in progress (set by the loop around each batch, read by the
#: executors' driver side, which scores each run as it finishes).
_RUN_DONE: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar("opto_run_done", default=None)


def run_listener() -> Callable[[Any], None] | None:
    """The callback for each finished run of the batch being evaluated in this context (or None)."""
    return _RUN_DONE.get()


class Emitter:
    """Sends events to listeners; a listener that raises is reported once, then left out."""

    def __init__(self, *listeners: Listener | None) -> None:
        self.listeners = [listener for listener in listeners if listener is not None]

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def emit(self, event: RunEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # a display or tracker must never stop the run
                self.listeners.remove(listener)
                log.warning(
                    "the on_event listener %r raised %s: %s; it gets no more events", listener, type(exc).__name__, exc
                )

    @contextmanager
    def evaluation(self, make: Callable[[int, int, int], RunEvent], total: int) -> Iterator[_Counter]:
        """Within the block, each run the executor reports finished emits ``make(done, total, failed)``;
        ``counter.finish(evaluations)`` emits what an executor that reports nothing left out."""
        counter = _Counter(self, make, total)
        token = _RUN_DONE.set(counter.done if self.listeners else None)
        try:
            yield counter
        finally:
            _RUN_DONE.reset(token)


class _Counter:
    """Counts the finished runs of one evaluation and emits an event for each."""

    def __init__(self, emitter: Emitter, make: Callable[[int, int, int], RunEvent], total: int) -> None:
        self.emitter, self.make, self.total = emitter, make, total
        self.count = self.failed = 0

    def done(self, evaluation: Any) -> None:
        self.count += 1
        self.failed += bool(getattr(evaluation, "failed", False))
        self.emitter.emit(self.make(self.count, self.total, self.failed))

    def finish(self, evaluations: list[Any]) -> None:
        if self.emitter and self.count < self.total:
            self.count = self.total
            self.failed = sum(bool(getattr(e, "failed", False)) for e in evaluations)
            self.emitter.emit(self.make(self.count, self.total, self.failed))
