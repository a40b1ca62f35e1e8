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
- `ProcessExecutor` (`process`): chosen by ``isolation="process"``/``"sandbox"`` (and by default when
  the LLM writes code): runs in worker processes that are killed on ``eval_timeout`` and replaced
  when they end (`opto_core.engine.isolation`).

Whatever the executor, the feedback function runs here, on the driver, and the driver alone
writes checkpoints. A failure says whose it is (`Evaluation.error_kind`): ``"workflow"`` (the
workflow raised on this example: feedback for the optimizer) or ``"infrastructure"`` (event loop,
connection, timeout, dead worker, the adapter's own error: the loop never keeps such a step).
"""

from __future__ import annotations

import dataclasses
import logging
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
    WorkflowExit,
    check_concurrency,
    error_kind,
    failed_run,
    finish,
    score_feedback,
    usage_of,
)
from opto_core.engine.executors.event_loop import AsyncioExecutor
from opto_core.engine.executors.threads import ThreadExecutor

__all__ = [
    "EXECUTORS",
    "AsyncioExecutor",
    "Evaluation",
    "EvaluationCancelled",
    "EvaluationTimeout",
    "Executor",
    "FeedbackError",
    "FeedbackFn",
    "InfrastructureError",
    "NonFiniteScore",
    "ThreadExecutor",
    "WorkflowExit",
    "check_concurrency",
    "error_kind",
    "failed_run",
    "finish",
    "make_executor",
    "score_feedback",
    "usage_of",
]

EXECUTORS = ("threads", "asyncio", "ray")

log = logging.getLogger("opto")


def make_executor(settings: Any, target: Any = None) -> Executor:
    """The executor a `Settings` asks for: a name ("threads", "asyncio", "ray") or an `Executor` object.

    ``settings.isolation`` (with ``target``, for ``"auto"``) may put the runs in worker processes
    instead (`opto_core.engine.isolation`); given the target, such an executor starts at once, before
    the loop starts any thread.
    """
    from opto_core.engine.isolation import is_explicit, resolve_isolation, trainable_code

    choice = settings.executor
    concurrency = check_concurrency(settings.workers)
    setting = getattr(settings, "isolation", "none")
    level, sandbox = resolve_isolation(setting, target)
    if level != "none":
        if not isinstance(choice, str) or choice == "ray":
            if is_explicit(setting) and (level == "sandbox" or not isinstance(choice, str)):
                raise ValueError(
                    f"isolation={level!r} runs the workflow in its own worker processes; it cannot be "
                    f"combined with executor={choice if isinstance(choice, str) else 'an object'!r} "
                    f"(use executor='threads' or 'asyncio' with it)"
                )
            level = "none"  # Ray's workers are processes already; an executor object runs where it runs
            if choice == "ray":
                log.info("isolation: executor='ray' runs the workflow in Ray's worker processes")
        else:
            from opto_core.engine.executors.process import ProcessExecutor, process_isolation_here

            if not is_explicit(setting) and not process_isolation_here():
                log.warning(
                    "isolation: the LLM writes code (%s) but worker processes are not available on this "
                    "platform; runs happen in this process (see docs/security.md)",
                    ", ".join(trainable_code(target)),
                )
                return make_executor(dataclasses.replace(settings, isolation="none"), target)
            if not is_explicit(setting):
                log.info(
                    "isolation='process' (the default when the LLM writes code: %s); pass isolation='none' "
                    "to run the workflow in this process",
                    ", ".join(trainable_code(target)),
                )
            executor = ProcessExecutor(
                concurrency,
                settings.nonfinite_scores,
                eval_timeout=settings.eval_timeout,
                target_factory=settings.target_factory,
                sandbox=sandbox,
            )
            if target is not None:
                executor.start(target)
            return executor
    if not isinstance(choice, str):
        if not (callable(getattr(choice, "evaluate", None)) and callable(getattr(choice, "close", None))):
            raise TypeError(
                f"executor must be one of {EXECUTORS} or an object with evaluate() and close() "
                f"(opto_core.engine.executors.Executor), got {type(choice).__name__}"
            )
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

        return RayExecutor(
            concurrency,
            settings.nonfinite_scores,
            eval_timeout=settings.eval_timeout,
            target_factory=settings.target_factory,
        )
    raise ValueError(f"unknown executor {choice!r}; choose one of {EXECUTORS} or pass an Executor object")
