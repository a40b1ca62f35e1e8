"""`AsyncioExecutor` ("asyncio"): up to ``concurrency`` runs at once on one event loop, for targets with ``arun``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any, Sequence

from opto_core.engine.background import BackgroundLoop
from opto_core.engine.executors.common import (
    DaemonPool,
    Evaluation,
    EvaluationCancelled,
    FeedbackFn,
    InProcessExecutor,
    _arun_one,
    _Batch,
    _run_one,
)

log = logging.getLogger("opto")


class AsyncioExecutor(InProcessExecutor):
    """Up to ``concurrency`` examples at once on one event loop (its own thread), no thread per run.

    A target with ``async arun(example) -> (output, graph)`` runs as a coroutine on that loop; the
    loop lives as long as the executor, so frameworks whose objects bind to the first loop that
    uses them (AutoGen teams) see the same loop every step. A target without ``arun`` runs in a
    pool of ``concurrency`` daemon threads (logged once).

    ``eval_timeout`` is enforced from the calling thread, not by the loop: a run that blocks the
    loop's thread (a busy loop in an ``async def``) cannot stop its own timeout. When a run times out
    and the loop does not answer any more, the loop is abandoned (its daemon thread never keeps the
    process from exiting) and the batch's other runs start again on a fresh loop, so no healthy
    example, in this batch or a later one, pays for the stuck one. A timed-out sync run's thread is
    replaced the same way. Workflow code that raises `SystemExit`/`KeyboardInterrupt` fails its run.
    """

    def __init__(self, concurrency: int = 1, nonfinite: str = "error", *, eval_timeout: float | None = None) -> None:
        super().__init__(concurrency, nonfinite, eval_timeout=eval_timeout)
        self._background = BackgroundLoop("opto-asyncio")
        self._said_sync = False
        self._lock = threading.Lock()
        self.loops_replaced = 0  # loops abandoned because a run blocked them, over the executor's life

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The executor's event loop, started on first use."""
        return self._background.loop

    @property
    def thread(self) -> threading.Thread | None:
        """The one thread that runs every coroutine (None before the first batch)."""
        return self._background.thread

    def _sync_pool(self, target: Any) -> DaemonPool:
        if not self._said_sync:
            log.info(
                "executor='asyncio': %s has no async arun(); its runs go to a pool of %d threads",
                type(target).__name__,
                self.concurrency,
            )
            self._said_sync = True
        with self._lock:
            if self._pool is None:
                self._pool = DaemonPool(self.concurrency, "opto-asyncio-sync")
            return self._pool

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
        is_async = callable(getattr(target, "arun", None))
        pool = None if is_async else self._sync_pool(target)
        if not self._background.responsive():  # a run of an earlier batch still blocks the loop
            self._replace_loop()
        tasks: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = {}
        sync_runs: dict[int, concurrent.futures.Future[Any]] = {}

        async def one(position: int, gate: asyncio.Semaphore) -> None:
            try:
                async with gate:
                    batch.started[position] = begun = time.perf_counter()
                    if pool is None:
                        output, graph = await _arun_one(target, examples[position])
                    else:
                        run = sync_runs[position] = pool.submit(_run_one, target, examples[position])
                        output, graph = await asyncio.wrap_future(run)
                    batch.done.put((position, (output, graph, time.perf_counter() - begun)))
            except asyncio.CancelledError:
                batch.done.put((position, EvaluationCancelled("the run was cancelled")))
                raise

        def launch(positions: list[int]) -> None:
            loop = self.loop

            async def start() -> list[asyncio.Task[None]]:
                gate = asyncio.Semaphore(self.concurrency)  # binds to this loop
                return [loop.create_task(one(position, gate)) for position in positions]

            for position in positions:
                batch.started.pop(position, None)
            for position, task in zip(positions, asyncio.run_coroutine_threadsafe(start(), loop).result()):
                tasks[position] = (loop, task)

        def stop(position: int) -> None:
            loop, task = tasks[position]
            loop.call_soon_threadsafe(task.cancel)
            if position in sync_runs:
                pool.abandon(sync_runs[position])  # type: ignore[union-attr]

        def cancel() -> None:
            for position in tasks:
                stop(position)

        def timed_out(position: int) -> None:
            stop(position)
            if pool is None and not self._background.responsive(0.25):
                # the run blocks the loop's thread: the other runs start again on a fresh loop
                self._replace_loop()
                outstanding = [p for p, result in enumerate(batch.results) if result is None]
                if outstanding:
                    launch(outstanding)

        launch(list(range(len(examples))))
        try:
            return batch.collect(self.eval_timeout, cancel, on_timeout=timed_out)
        finally:
            self._batch = None

    def _replace_loop(self) -> None:
        self._background.abandon()
        self.loops_replaced += 1
        log.warning(
            "executor='asyncio': a run blocks the event loop's thread; it is abandoned and a new loop "
            "takes over (%d replaced so far). Use isolation='process' to have such runs killed.",
            self.loops_replaced,
        )

    def close(self) -> None:
        """Stop the loop and its thread (and the sync pool); the executor can be used again after."""
        self.cancel()
        with self._lock:
            pool, self._pool = self._pool, None
        if self._background.responsive():
            self._background.stop()
        else:
            self._background.abandon()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
