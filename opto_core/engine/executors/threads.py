"""`ThreadExecutor` ("threads", the default): up to ``concurrency`` runs at once in threads of this process."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any, Sequence

from opto_core.engine.executors.common import (
    EXITS,
    DaemonPool,
    Evaluation,
    EvaluationCancelled,
    FeedbackFn,
    InProcessExecutor,
    SigintWitness,
    _Batch,
    _run_one,
)

log = logging.getLogger("opto")


class ThreadExecutor(InProcessExecutor):
    """The default: up to ``concurrency`` examples at once, each in a thread of this process.

    With ``eval_timeout``, a run that takes longer is that example's failure (an infrastructure
    one). Python cannot stop a thread: the run's thread is abandoned (a daemon thread, so it never
    keeps the process from exiting) and a fresh thread takes its place, so later examples and
    batches still get ``concurrency`` threads. An abandoned run that keeps computing still takes
    CPU time from the rest; ``isolation="process"`` kills such runs instead.
    Workflow code that raises `SystemExit` or `KeyboardInterrupt` fails its run
    (`opto_core.engine.executors.WorkflowExit`); a real Ctrl-C still stops the batch.
    """

    def evaluate(
        self,
        target: Any,
        examples: Sequence[Any],
        feedback_fn: FeedbackFn,
        *,
        indices: Sequence[int],
        failure_score: float,
        values: dict[str, Any] | None = None,
    ) -> list[Evaluation]:
        batch = self._batch = _Batch(examples, indices, feedback_fn, failure_score, self.nonfinite)
        try:
            if self.eval_timeout is None and (self.concurrency <= 1 or len(examples) <= 1):
                return self._in_turn(target, examples, batch)
            return self._in_threads(target, examples, batch)
        finally:
            self._batch = None

    def _in_turn(self, target: Any, examples: Sequence[Any], batch: _Batch) -> list[Evaluation]:
        """The plain path: one example after the other in the calling thread, no thread at all."""
        for position, example in enumerate(examples):
            if batch.cancelled.is_set():
                batch.fail(position, "cancelled", EvaluationCancelled("the run was cancelled"))
                continue
            started = time.perf_counter()
            with SigintWitness() as ctrl_c:
                output, graph = _run_one(target, example)
            if ctrl_c.seen and isinstance(getattr(output, "__cause__", None), EXITS):
                raise KeyboardInterrupt  # the user's Ctrl-C landed in the run: stop, as anywhere else
            batch.score(position, output, graph, time.perf_counter() - started)
        return [r for r in batch.results if r is not None]

    def _in_threads(self, target: Any, examples: Sequence[Any], batch: _Batch) -> list[Evaluation]:
        def one(position: int) -> None:
            batch.started[position] = begun = time.perf_counter()
            output, graph = _run_one(target, examples[position])
            batch.done.put((position, (output, graph, time.perf_counter() - begun)))

        if self._pool is None:
            self._pool = DaemonPool(self.concurrency, "opto-eval")
        pool = self._pool
        futures: dict[int, concurrent.futures.Future[Any]] = {
            position: pool.submit(one, position) for position in range(len(examples))
        }

        def cancel() -> None:
            for future in futures.values():
                pool.abandon(future)

        return batch.collect(self.eval_timeout, cancel, on_timeout=lambda position: pool.abandon(futures[position]))
