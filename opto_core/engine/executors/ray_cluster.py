"""Evaluation on a Ray cluster (``executor="ray"``, extra ``ray``): the workflow runs on workers, the loop stays here.

How a batch travels:

1. The target goes to the workers once, as a *payload*: a picklable ``target_factory`` (called on
   each worker to build the workflow there) or, without one, the target itself pickled with
   cloudpickle. A payload that holds the value of a secret environment variable (an API key inside
   a client object) is refused: keys reach workers through their environment, never inside tasks.
2. A pool of actors (``min(concurrency, cluster CPUs)`` of them) each builds the workflow once and
   keeps it between batches; each actor runs up to ``concurrency / actors`` examples at once on its
   own event loop (``arun``) or thread pool (``run``).
3. Every task carries the step's trainable values; the actor applies them (``target.apply``) when
   they differ from the ones it holds, then runs the example.
4. Output and graph come back to the driver, where the feedback function runs and the loop writes
   checkpoints and history: nothing on a worker touches the run directory.

A worker that dies or a run that exceeds ``eval_timeout`` is an infrastructure failure of that
example, retried once on another actor; the step never waits for a lost worker. A dead actor is
replaced, and so is the actor of a run that timed out (Ray cannot stop a thread or a loop that never
yields, and a stuck run would hold a slot of every later run): the other runs in flight on it start
again elsewhere, uncharged. `RayExecutor.cancel` (Ctrl-C, the STOP file) cancels every outstanding task.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from opto_core.engine.executors.common import (
    Evaluation,
    EvaluationCancelled,
    EvaluationTimeout,
    FeedbackFn,
    InfrastructureError,
    _arun_one,
    _Batch,
    _run_one,
    check_concurrency,
    failed_run,
    portable,
)
from opto_core.engine.executors.payload import SecretInPayload, TargetNotPicklable, make_payload, unpicklable_part  # noqa: F401
from opto_core.engine.executors.process import WroteAroundOptimizer
from opto_core.kernel.code import runs_elsewhere

log = logging.getLogger("opto")

EXTRA_HINT = "executor='ray' needs the `ray` extra: pip install 'opto-adapters[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or an `ImportError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    return ray


# ----- the worker ---------------------------------------------------------------------------------------------
class _Worker:
    """A Ray actor (async) that builds the workflow once and runs examples with the step's values."""

    def __init__(self, payload: tuple[str, bytes], concurrency: int) -> None:
        import cloudpickle

        kind, blob = payload
        built = cloudpickle.loads(blob)
        self.target = built() if kind == "factory" else built
        self.applied: dict[str, Any] | None = None
        self.applied_exact: dict[str, str] | None = None  # every parameter as applied (exact JSON), to see writes
        self.is_async = callable(getattr(self.target, "arun", None))
        self.pool = (
            None if self.is_async else ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="opto-ray-run")
        )
        self.name = f"pid {os.getpid()}"

    def pid(self) -> int:
        return os.getpid()

    async def run(self, values: dict[str, Any] | None, example: Any) -> tuple[bytes, float, str, list[str]]:
        import cloudpickle

        from opto_core.engine.executors.child import all_values, changed_parameters, values_before_run

        if values is not None and values != self.applied:  # no await in between: one coroutine applies
            self.target.apply(values)
            self.applied = copy.deepcopy(values)
            self.applied_exact = all_values(self.target)
        before = values_before_run(self.target)  # every parameter, frozen ones included
        begun = time.perf_counter()
        if self.is_async:
            output, graph = await _arun_one(self.target, example)
        else:
            output, graph = await asyncio.get_running_loop().run_in_executor(self.pool, _run_one, self.target, example)
        seconds = time.perf_counter() - begun
        drift = changed_parameters(self.target, self.applied_exact, before)  # the driver then retires this actor
        if isinstance(output, BaseException):  # its type may not unpickle on the driver, its cause never travels
            output = portable(output)
        try:
            blob = cloudpickle.dumps((output, graph))
        except Exception as exc:
            error = InfrastructureError(
                f"the run's output or graph cannot be sent back to the driver ({type(exc).__name__}: {exc})"
            )
            blob = cloudpickle.dumps(failed_run("returning the result", error))
        return blob, seconds, self.name, drift


# ----- the driver ---------------------------------------------------------------------------------------------
class RayExecutor:
    """Runs each example on a pool of Ray actors; the feedback function, history and checkpoints stay here.

    ``address``: a running cluster (else ``RAY_ADDRESS``; else a local instance with
    ``min(concurrency, CPUs)`` CPUs is started, and shut down by `close`). If Ray is already
    initialized in this process, that connection is used as it is. ``runtime_env`` goes to
    ``ray.init`` (a cluster's workers need your code: ``{"working_dir": ".", "pip": [...]}``).
    ``retries``: how often an example lost to a dead worker or a timeout is run again (once).
    ``actors``: how many worker actors to start (default: one per CPU the cluster has now, at most
    ``concurrency``; set it on an autoscaling cluster, whose CPUs appear only once asked for).
    """

    def __init__(
        self,
        concurrency: int = 1,
        nonfinite: str = "error",
        *,
        eval_timeout: float | None = None,
        target_factory: Callable[[], Any] | None = None,
        address: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        worker_cpus: float = 1.0,
        retries: int = 1,
        actors: int | None = None,
    ) -> None:
        self.ray = import_ray()
        self.concurrency = check_concurrency(concurrency)
        self.nonfinite = nonfinite
        self.eval_timeout = eval_timeout
        self.target_factory = target_factory
        self.address = address
        self.runtime_env = runtime_env
        self.worker_cpus = worker_cpus
        self.retries = retries
        self.actor_count = None if actors is None else check_concurrency(actors)
        self.started_ray = False
        self.actors: list[Any] = []
        self.replaced = 0  # actors replaced after they died, over the executor's life
        self._built_for: tuple[int, int] | None = None
        self._payload: tuple[str, bytes] | None = None
        self._inflight: dict[Any, Any] = {}
        self._elsewhere = False  # this process said its runs happen elsewhere (`opto_core.kernel.code.runs_elsewhere`)
        self._ready: dict[int, Any] = {}
        self._ready_at: dict[int, float] = {}
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    # ----- connection and pool ----------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to ``address``/``RAY_ADDRESS`` or start a local instance (once)."""
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, runtime_env=self.runtime_env, log_to_driver=False)
        else:
            cpus = min(self.concurrency, os.cpu_count() or 1)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env=self.runtime_env)
            self.started_ray = True
            log.info("executor='ray': started a local Ray instance with %d CPUs", cpus)

    def _actor(self, per_actor: int) -> Any:
        # one slot more than the runs it gets: the readiness probe must not queue behind a long run
        remote = self.ray.remote(_Worker).options(
            num_cpus=self.worker_cpus, max_concurrency=per_actor + 1, max_restarts=0, max_task_retries=0
        )
        actor = remote.remote(self._payload, per_actor)
        self._ready[id(actor)] = actor.pid.remote()  # done once the actor has built the workflow
        return actor

    def _started(self, actor: Any) -> float | None:
        """When ``actor`` was first seen ready (built), None while it is still starting.

        ``eval_timeout`` counts from then: starting a worker process and building the workflow
        (imports, unpickling) is not the example's run.
        """
        key = id(actor)
        if key in self._ready_at:
            return self._ready_at[key]
        ref = self._ready.get(key)
        if ref is None:
            return None
        done, _ = self.ray.wait([ref], timeout=0)
        if not done:
            return None
        self._ready_at[key] = time.perf_counter()
        return self._ready_at[key]

    def _pool_for(self, target: Any) -> None:
        key = (id(target), id(self.target_factory))
        if self.actors and self._built_for == key:
            return
        self._kill_actors()
        self._payload = make_payload(target, self.target_factory)
        if not self._elsewhere:  # the runs happen on the actors: compiling a value here runs no new module
            runs_elsewhere(True)
            self._elsewhere = True
        if self.actor_count is not None:
            count = min(self.concurrency, self.actor_count)
        else:
            cpus = self.ray.cluster_resources().get("CPU", 1.0)
            count = max(
                1, min(self.concurrency, int(cpus // self.worker_cpus) if self.worker_cpus else self.concurrency)
            )
        self._per_actor = math.ceil(self.concurrency / count)
        self.actors = [self._actor(self._per_actor) for _ in range(count)]
        self._built_for = key

    def worker_pids(self) -> list[int]:
        """The process id of every actor (for tests and diagnostics)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def _replace(self, slot: int, dead: Any, why: str = "it died") -> None:
        with self._lock:
            if self.actors[slot] is not dead:  # already replaced by another lost task
                return
            try:
                self.ray.kill(dead, no_restart=True)
            except Exception:
                pass
            self.actors[slot] = self._actor(self._per_actor)
            self.replaced += 1
        log.warning("executor='ray': replaced a worker (%s; %d replaced so far)", why, self.replaced)

    # ----- one batch ---------------------------------------------------------------------------------------------
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
        ray = self.ray
        self.connect()
        self._pool_for(target)
        if values is None:  # the driver's current values: the workers' copies may be older
            values = {p.name: p.value for p in target.parameters() if p.trainable}
        self._cancelled.clear()
        values_ref = ray.put(values)  # once per batch; every task gets it from the object store
        batch = _Batch(examples, indices, feedback_fn, failure_score, self.nonfinite)
        retried: dict[int, list[str]] = collections.defaultdict(list)
        workers: dict[int, str] = {}
        queue: collections.deque[tuple[int, int, int | None]] = collections.deque(
            (position, 0, None) for position in range(len(examples))
        )
        busy = [0] * len(self.actors)
        inflight = self._inflight = {}

        def submit(position: int, attempt: int, avoid: int | None) -> None:
            slots = [s for s in range(len(self.actors)) if s != avoid] or [0]
            slot = min(slots, key=lambda s: busy[s])
            actor = self.actors[slot]
            ref = actor.run.remote(values_ref, examples[position])
            busy[slot] += 1
            inflight[ref] = (position, attempt, slot, actor, time.perf_counter())

        def lost(position: int, attempt: int, slot: int, exc: BaseException, seconds: float) -> None:
            cause = f"{type(exc).__name__}: {_first_line(exc)}"
            if attempt < self.retries and not self._cancelled.is_set():
                retried[position].append(cause)
                log.warning(
                    "executor='ray': example %s lost (%s); retrying it on another worker", indices[position], cause
                )
                queue.append((position, attempt + 1, slot))
            else:
                batch.fail(position, "ray worker", exc, seconds)

        def requeue(actor: Any) -> None:
            """Healthy runs on a killed worker: again, not charged."""
            for other, (o_position, o_attempt, o_slot, o_actor, _) in list(inflight.items()):
                if o_actor is actor:
                    del inflight[other]
                    busy[o_slot] -= 1
                    queue.appendleft((o_position, o_attempt, None))

        try:
            while queue or inflight:
                if self._cancelled.is_set():
                    for ref in list(inflight):
                        ray.cancel(ref)
                    left = [p for p, *_ in inflight.values()] + [p for p, *_ in queue]
                    for position in left:
                        batch.fail(position, "cancelled", EvaluationCancelled("the run was cancelled"))
                    inflight.clear()
                    queue.clear()
                    break
                while queue and len(inflight) < self.concurrency:
                    submit(*queue.popleft())
                wait = 0.2 if self.eval_timeout is None else max(0.01, min(0.2, self.eval_timeout / 4))
                ready, rest = ray.wait(list(inflight), num_returns=1, timeout=wait)
                if ready and rest:
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    ready += more
                now = time.perf_counter()
                for ref in ready:
                    position, attempt, slot, actor, submitted = inflight.pop(ref)
                    busy[slot] -= 1
                    try:
                        blob, seconds, worker, drift = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:  # the worker process died
                        self._replace(slot, actor)
                        lost(
                            position,
                            attempt,
                            slot,
                            InfrastructureError(f"the Ray worker died: {_first_line(exc)}"),
                            now - submitted,
                        )
                        continue
                    except ray.exceptions.TaskCancelledError as exc:
                        batch.fail(position, "cancelled", EvaluationCancelled(f"the run was cancelled: {exc}"))
                        continue
                    except ray.exceptions.RayError as exc:  # the worker code itself raised (apply, build...)
                        lost(
                            position,
                            attempt,
                            slot,
                            InfrastructureError(f"the Ray task failed: {_first_line(exc)}"),
                            now - submitted,
                        )
                        continue
                    import cloudpickle

                    output, graph = cloudpickle.loads(blob)
                    workers[position] = worker
                    if drift:  # the actor holds values the loop never set: it is retired, its other runs go again
                        output, graph = failed_run(
                            "ray worker",
                            WroteAroundOptimizer(
                                f"a run wrote around the optimizer ({', '.join(f'{n}: its value changed' for n in drift)}"
                                f"); values change only through the optimizer's proposals, so the run failed and its "
                                f"worker, which held the changed values, was replaced"
                            ),
                        )
                        self._replace(slot, actor, why="a run changed parameter values behind the loop")
                        requeue(actor)
                    batch.score(position, output, graph, seconds)
                    if drift and batch.results[position] is not None:
                        batch.results[position].error_kind = "wrote_around"  # the loop rolls such a step back
                        batch.results[position].drift = list(drift)
                if self.eval_timeout is not None:
                    for ref, (position, attempt, slot, actor, submitted) in list(inflight.items()):
                        if ref not in inflight:  # re-queued below, as a bystander of a killed worker
                            continue
                        ready_at = self._started(actor)
                        if ready_at is not None and now - max(submitted, ready_at) > self.eval_timeout:
                            del inflight[ref]
                            busy[slot] -= 1
                            # Ray cannot stop a running thread or a loop that never yields: the worker is
                            # killed and replaced, so the stuck run cannot hold a slot of later runs
                            self._replace(slot, actor, why="a run on it exceeded eval_timeout")
                            requeue(actor)
                            lost(
                                position,
                                attempt,
                                slot,
                                EvaluationTimeout(f"the run took longer than eval_timeout={self.eval_timeout:g}s"),
                                now - submitted,
                            )
        except BaseException:  # Ctrl-C or a feedback error: cancel what is still running, then re-raise
            for ref in list(inflight):
                ray.cancel(ref)
            raise
        finally:
            self._inflight = {}
        results = [r for r in batch.results if r is not None]
        for position, evaluation in enumerate(results):
            evaluation.retried = retried.get(position, [])
            evaluation.worker = workers.get(position, "")
        return results

    def cancel(self) -> None:
        """Cancel every outstanding task of the batch being evaluated (the batch returns at once)."""
        self._cancelled.set()

    def _kill_actors(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors = []
        self._built_for = None

    def close(self) -> None:
        """Stop the actors (and the local Ray instance, if this executor started it)."""
        self.cancel()
        self._kill_actors()
        if self._elsewhere:
            runs_elsewhere(False)
            self._elsewhere = False
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """A one-line cause: Ray's first line, plus the original error's last line when Ray wrapped one."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0][:300]
    if "creation task" in first:
        return f"building the workflow on the worker failed: {lines[-1][:300]}"
    return first if len(lines) == 1 or lines[-1] in first else f"{first} ... {lines[-1][:300]}"
