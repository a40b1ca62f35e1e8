"""Where evaluations run: each example of a batch is one traced run of the workflow plus its feedback.

An optimization step is cheap (one LLM call); evaluating the workflow on a minibatch and a
validation set is what costs time. The loop hands an `Executor` a batch of examples (with the
step's values, for executors that run elsewhere) and gets back one `Evaluation` per example, in
order. Three executors, one contract:

- `ThreadExecutor` ("threads", the default): up to ``concurrency`` runs at once in threads of this
  process. Right for sync workflows and small concurrency.
- `AsyncioExecutor` ("asyncio"): up to ``concurrency`` runs at once on ONE event loop, no thread
  per run, for targets with ``async arun(example) -> (output, graph)`` (the adapters' targets have
  one). A sync target still works: it runs in a bounded thread pool, said once in the log.
- `RayExecutor` (`ray_cluster`) ("ray", extra ``ray``): runs on the workers of a Ray
  cluster (or a local instance), for work that outgrows one machine.

Whatever the executor, the feedback function runs here, on the driver, and the driver alone
writes checkpoints. A failure says whose it is (`Evaluation.error_kind`): ``"workflow"`` (the
workflow raised on this example: feedback for the optimizer) or ``"infrastructure"`` (event loop,
connection, timeout, dead worker, the adapter's own error: the loop never keeps such a step).
"""

from __future__ import annotations

from typing import Any

from opto_core.engine.executors.common import (
    Evaluation,
    EvaluationCancelled,
    EvaluationTimeout,
    Executor,
    FeedbackError,
    FeedbackFn,
    InfrastructureError,
    NonFiniteScore,
    check_concurrency,
    error_kind,
    failed_run,
    finish,
    score_feedback,
    usage_of,
)
from opto_core.engine.executors.event_loop import AsyncioExecutor
from opto_core.engine.executors.threads import ThreadExecutor

__all__ = ["EXECUTORS", "AsyncioExecutor", "Evaluation", "EvaluationCancelled", "EvaluationTimeout", "Executor",
           "FeedbackError", "FeedbackFn", "InfrastructureError", "NonFiniteScore", "ThreadExecutor",
           "check_concurrency", "error_kind", "failed_run", "finish", "make_executor", "score_feedback", "usage_of"]

EXECUTORS = ("threads", "asyncio", "ray")


def make_executor(settings: Any) -> Executor:
    """The executor a `Settings` asks for: a name ("threads", "asyncio", "ray") or an `Executor` object."""
    choice = settings.executor
    concurrency = check_concurrency(settings.workers)
    if not isinstance(choice, str):
        if not (callable(getattr(choice, "evaluate", None)) and callable(getattr(choice, "close", None))):
            raise TypeError(f"executor must be one of {EXECUTORS} or an object with evaluate() and close() "
                            f"(opto_core.engine.executors.Executor), got {type(choice).__name__}")
        own = getattr(choice, "concurrency", None)
        if own is not None:
            check_concurrency(own)
        return choice
    if choice == "threads":
        return ThreadExecutor(concurrency, settings.nonfinite_scores, eval_timeout=settings.eval_timeout)
    if choice == "asyncio":
        return AsyncioExecutor(concurrency, settings.nonfinite_scores, eval_timeout=settings.eval_timeout)
    if choice == "ray":
        from opto_core.engine.executors.ray_cluster import RayExecutor  # imports ray itself only when used

        return RayExecutor(concurrency, settings.nonfinite_scores, eval_timeout=settings.eval_timeout,
                           target_factory=settings.target_factory)
    raise ValueError(f"unknown executor {choice!r}; choose one of {EXECUTORS} or pass an Executor object")
