"""`AsyncioExecutor` ("asyncio"): up to ``concurrency`` runs at once on one event loop, for targets with ``arun``."""


from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Sequence

from opto_core.engine.background import BackgroundLoop
from opto_core.engine.executors.common import (
    Evaluation,
    EvaluationCancelled,
    EvaluationTimeout,
    FeedbackFn,
    _arun_one,
    _Batch,
    _run_one,
    check_concurrency,
    failed_run,
)

log = logging.getLogger("opto")


class AsyncioExecutor:
    """Up to ``concurrency`` examples at once on one event loop (its own thread), no thread per run.

    A target with ``async arun(example) -> (output, graph)`` runs as a coroutine on that loop; the
    loop lives as long as the executor, so frameworks whose objects bind to the first loop that
    uses them (AutoGen teams) see the same loop every step. A target without ``arun`` runs in a
    thread pool bounded by ``concurrency`` (logged once). ``eval_timeout`` cancels the coroutine.
    """

    def __init__(self, concurrency: int = 1, nonfinite: str = "error", *, eval_timeout: float | None = None) -> None:
        self.concurrency = check_concurrency(concurrency)
        self.nonfinite = nonfinite
        self.eval_timeout = eval_timeout
        self._background = BackgroundLoop("opto-asyncio")
        self._pool: ThreadPoolExecutor | None = None
        self._said_sync = False
        self._batch: _Batch | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The executor's event loop, started on first use."""
        return self._background.loop

    @property
    def thread(self) -> threading.Thread | None:
        """The one thread that runs every coroutine (None before the first batch)."""
        return self._background.thread

    def _sync_pool(self, target: Any) -> ThreadPoolExecutor:
        if not self._said_sync:
            log.info("executor='asyncio': %s has no async arun(); its runs go to a pool of %d threads",
                     type(target).__name__, self.concurrency)
            self._said_sync = True
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="opto-asyncio-sync")
        return self._pool

    def evaluate(self, target: Any, examples: Sequence[Any], feedback_fn: FeedbackFn, *, indices: Sequence[int],
                 failure_score: float, values: dict[str, Any] | None = None) -> list[Evaluation]:
        batch = self._batch = _Batch(examples, indices, feedback_fn, failure_score, self.nonfinite)
        loop = self.loop
        is_async = callable(getattr(target, "arun", None))
        pool = None if is_async else self._sync_pool(target)
        gate = asyncio.Semaphore(self.concurrency)  # binds to the executor's loop on first use
        timeout = self.eval_timeout

        async def one(position: int) -> None:
            try:
                async with gate:
                    begun = time.perf_counter()
                    work: Awaitable[tuple[Any, Any]] = (
                        _arun_one(target, examples[position]) if is_async
                        else loop.run_in_executor(pool, _run_one, target, examples[position]))
                    try:
                        output, graph = await asyncio.wait_for(work, timeout)
                    except asyncio.TimeoutError:
                        output, graph = failed_run("timeout", EvaluationTimeout(
                            f"the run took longer than eval_timeout={timeout:g}s"))
                    batch.done.put((position, (output, graph, time.perf_counter() - begun)))
            except asyncio.CancelledError:
                batch.done.put((position, EvaluationCancelled("the run was cancelled")))
                raise

        async def launch() -> list[asyncio.Task[None]]:
            return [loop.create_task(one(position)) for position in range(len(examples))]

        tasks = asyncio.run_coroutine_threadsafe(launch(), loop).result()

        def cancel() -> None:
            loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])

        try:
            return batch.collect(None, cancel)
        finally:
            self._batch = None

    def cancel(self) -> None:
        """Cancel the outstanding runs of the batch being evaluated (their coroutines get CancelledError)."""
        batch = self._batch
        if batch is not None:
            batch.cancelled.set()

    def close(self) -> None:
        """Stop the loop and its thread (and the sync pool); the executor can be used again after."""
        self.cancel()
        with self._lock:
            pool, self._pool = self._pool, None
        self._background.stop()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
