"""What every executor shares: the evaluation record, whose failure it was, and the driver's batch.

A run either returns ``(output, graph)`` or fails; `error_kind` says whose failure it was.
The feedback function always runs on the driver (`finish`), and `_Batch` is the driver's side of
one batch for the thread and asyncio executors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from opto_core.engine.events import run_listener
from opto_core.engine.provider_errors import provider_failure
from opto_core.kernel.exits import EXITS, WorkflowExit, exit_as_failure  # noqa: F401  (re-exported)
from opto_core.kernel.feedback import Feedback
from opto_core.kernel.graph import META_USAGE, Graph
from opto_core.kernel.text import short_repr

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
    that failed for infrastructure reasons and were retried (a dead Ray worker, a timeout),
    ``worker`` where the final attempt ran (empty in this process), and ``drift`` the parameters whose
    value the run changed behind the loop's back, as an isolated worker saw it (the run then failed).
    """

    index: int
    output: Any
    graph: Graph
    feedback: Feedback
    failed: bool = False
    error_kind: str | None = None  # None | "workflow" | "infrastructure" | "wrote_around"
    usage: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    retried: list[str] = field(default_factory=list)
    worker: str = ""
    drift: list[str] = field(default_factory=list)  # parameters the run changed behind the loop (seen in a worker)


_INFRA_TYPES = (
    "APIConnectionError",
    "APITimeoutError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "RemoteProtocolError",
    "RayTaskError",
    "WorkerCrashedError",
    "RayActorError",
    "GetTimeoutError",
    "CancelledError",
    "InfrastructureError",
)
_INFRA_TEXT = ("event loop", "different loop", "Event loop is closed", "bound to a different")


def error_kind(exc: BaseException) -> str:
    """``"infrastructure"`` when the failure is not the workflow's own logic, else ``"workflow"``.

    Provider errors (HTTP 5xx, 429, "overloaded", timeouts and dropped connections from the model's
    client, see `opto_core.engine.provider_errors`), connection and timeout errors, event-loop
    errors and our own `InfrastructureError` are infrastructure; so is an exception chained from
    one of them. Everything else (a tool that raised, a parse error, a wrong answer's exception)
    is the workflow's and is feedback.
    """
    if provider_failure(exc) is not None:
        return "infrastructure"
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        names = {cls.__name__ for cls in type(current).__mro__} | set(getattr(current, "type_names", ()) or ())
        if names & set(_INFRA_TYPES) or isinstance(current, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return "infrastructure"
        if isinstance(current, RuntimeError) and any(t in str(current) for t in _INFRA_TEXT):
            return "infrastructure"
        current = current.__cause__ or current.__context__
        seen += 1
    return "workflow"


class PortableError(Exception):
    """Stands in for a run's exception on its way back from another process (a Ray worker).

    Many exceptions cannot be unpickled (the openai SDK's need keyword arguments), and none
    carries its cause along. The stand-in keeps what the driver needs: the text, the names of
    the classes in the original's chain (the first is shown as its type; `error_kind` reads all) and the provider failure
    found anywhere in its chain (so it is retried and reported like the original).
    """

    def __init__(self, message: str, type_names: Sequence[str] = (), provider_failure: Any = None) -> None:
        super().__init__(message)
        self.type_names = list(type_names)
        self.provider_failure = provider_failure

    def __reduce__(self) -> Any:
        return (PortableError, (self.args[0], self.type_names, self.provider_failure))

    @classmethod
    def of(cls, exc: BaseException) -> PortableError:
        names: list[str] = []
        current: BaseException | None = exc
        while current is not None and len(names) < 64:  # the chain's class names, for error_kind
            names.extend(c.__name__ for c in type(current).__mro__ if c.__name__ not in names)
            current = current.__cause__ or current.__context__
        return cls(str(exc), names, provider_failure(exc))


def portable(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling with what the driver needs, else a `PortableError`."""
    if provider_failure(exc) is None and exc.__cause__ is None and exc.__context__ is None:
        try:
            import cloudpickle

            cloudpickle.loads(cloudpickle.dumps(exc))
            return exc
        except Exception:  # pickling raises anything: TypeError, PicklingError, AttributeError...
            pass
    return PortableError.of(exc)


class NonFiniteScore(FeedbackError):
    """A NaN or infinite score: an error by default, a failed run when the user opted in."""


def score_feedback(example: Any, output: Any, feedback_fn: FeedbackFn, index: int) -> Feedback:
    """Call the user's feedback function and check what it returned (a score must be finite)."""
    try:
        raw = feedback_fn(example, output)
    except Exception as exc:
        raise FeedbackError(
            f"feedback_fn raised on example {index} ({short_repr(example, 120)}): {type(exc).__name__}: {exc}"
        ) from exc
    try:
        feedback = Feedback.coerce(raw)
    except (TypeError, ValueError) as exc:
        raise FeedbackError(
            f"feedback_fn returned {raw!r} for example {index} ({short_repr(example, 120)}): {exc}"
        ) from exc
    if feedback.score is not None and not math.isfinite(feedback.score):
        raise NonFiniteScore(
            f"feedback_fn returned the score {feedback.score} for example {index} "
            f"({short_repr(example, 120)}): scores must be finite numbers (pass "
            f"nonfinite_scores='failure' to count such runs as failures)"
        )
    return feedback


def usage_of(graph: Graph) -> dict[str, Any]:
    """The workflow's own token use recorded in a run's graph (adapters put it under ``META_USAGE``)."""
    usage = graph.meta.get(META_USAGE)
    return dict(usage) if isinstance(usage, dict) else {}


def finish(
    index: int,
    example: Any,
    output: Any,
    graph: Graph,
    feedback_fn: FeedbackFn,
    failure_score: float,
    seconds: float = 0.0,
    nonfinite: str = "error",
) -> Evaluation:
    """Turn one run's (output, graph) into an `Evaluation`: a raised exception is a failure, else feedback."""
    usage = usage_of(graph)
    if isinstance(output, BaseException):
        shown = (
            output.type_names[0] if isinstance(output, PortableError) and output.type_names else type(output).__name__
        )
        text = f"The run raised {shown}: {output}"
        return Evaluation(
            index,
            output,
            graph,
            Feedback(failure_score, text),
            failed=True,
            error_kind=error_kind(output),
            usage=usage,
            seconds=seconds,
        )
    try:
        feedback = score_feedback(example, output, feedback_fn, index)
    except NonFiniteScore as exc:
        if nonfinite != "failure":
            raise
        return Evaluation(
            index,
            output,
            graph,
            Feedback(failure_score, f"{exc} (counted as a failed run)"),
            failed=True,
            error_kind="workflow",
            usage=usage,
            seconds=seconds,
        )
    return Evaluation(index, output, graph, feedback, usage=usage, seconds=seconds)


def failed_run(what: str, exc: BaseException) -> tuple[BaseException, Graph]:
    """(exception, graph) for a run that never produced a graph of its own (timeout, crash, cancel)."""
    graph = Graph(meta={"error": f"{type(exc).__name__}: {exc}"})
    graph.add_exception(what, exc)
    return exc, graph


def _run_one(target: Any, example: Any) -> tuple[Any, Graph]:
    try:
        output, graph = target.run(example)
    except EXITS as exc:  # workflow code raised SystemExit/KeyboardInterrupt: the run fails, the process goes on
        return failed_run("target.run", exit_as_failure(exc))
    except Exception as exc:  # a target that raised instead of returning (output, graph): not the workflow's fault
        wrapped = InfrastructureError(f"the target itself raised {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        return failed_run("target.run", wrapped)
    return (exit_as_failure(output) if isinstance(output, EXITS) else output), graph


async def _arun_one(target: Any, example: Any) -> tuple[Any, Graph]:
    try:
        output, graph = await target.arun(example)
    except EXITS as exc:  # caught here, before asyncio would re-raise it out of the event loop
        return failed_run("target.arun", exit_as_failure(exc))
    except Exception as exc:  # arun must return (exception, graph) for the workflow's own errors
        wrapped = InfrastructureError(f"the target itself raised {type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        return failed_run("target.arun", wrapped)
    return (exit_as_failure(output) if isinstance(output, EXITS) else output), graph


class SigintWitness:
    """Tells a real Ctrl-C from a `KeyboardInterrupt` that workflow code raised itself.

    A run in the calling (main) thread may raise `KeyboardInterrupt` for two reasons: the user
    pressed Ctrl-C (the run must stop), or suggested code raised it (the run fails, the
    optimization goes on). While active, it notes every SIGINT the process receives and passes it
    on to the handler that was there before. Off the main thread it does nothing (signals only
    reach the main thread, so there a `KeyboardInterrupt` is always the workflow's).
    """

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> SigintWitness:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.getsignal(signal.SIGINT)
                signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except (ValueError, TypeError):  # no signal support here: every KeyboardInterrupt counts as real
                self.seen = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.seen = True
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


class DaemonPool(concurrent.futures.Executor):
    """A thread pool whose threads never keep the process alive, and whose stuck threads can be replaced.

    `concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, so one run that
    never returns keeps the process from exiting; and a thread stuck in such a run is a lost slot
    for every later batch. Here every thread is a daemon, and `abandon` gives up on one run: its
    thread is left to finish (or not) on its own and a fresh thread takes its place, so the pool
    keeps ``size`` working threads. Python cannot stop a thread; for runs that must be stopped,
    use ``isolation="process"``.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size, self.name = check_concurrency(size), name
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[concurrent.futures.Future[Any], threading.Thread] = {}
        self._retired: set[threading.Thread] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._made = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.name} pool is shut down")
            self._work.put((future, fn, args, kwargs))
            if len(self._threads) < self.size:
                self._start()
        return future

    def _start(self) -> None:
        self._made += 1
        thread = threading.Thread(target=self._serve, name=f"{self.name}-{self._made}", daemon=True)
        self._threads.add(thread)
        thread.start()

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._work.get()
            if item is None:
                break
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running[future] = me
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the future carries it; the thread lives on
                future.set_exception(exc)
            else:
                future.set_result(result)
            with self._lock:
                self._running.pop(future, None)
                if me in self._retired or self._closed:
                    self._retired.discard(me)
                    self._threads.discard(me)
                    return

    def abandon(self, future: concurrent.futures.Future[Any]) -> None:
        """Give up on ``future``'s run: a fresh thread replaces the one running it (if it is running)."""
        future.cancel()
        with self._lock:
            thread = self._running.pop(future, None)
            if thread is None or self._closed:
                return
            self._retired.add(thread)
            self._threads.discard(thread)
            self._start()

    @property
    def abandoned(self) -> int:
        """Threads given up on that have not returned yet."""
        with self._lock:
            return sum(1 for thread in self._retired if thread.is_alive())

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        while cancel_futures:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()


def check_concurrency(concurrency: Any) -> int:
    """``concurrency`` as a positive int, or a `ValueError` that says what is allowed."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1 (how many examples run at once), got {concurrency!r}")
    return concurrency


class Executor(Protocol):
    """Runs a batch of examples and returns their evaluations in order."""

    def evaluate(
        self,
        target: Any,
        examples: Sequence[Any],
        feedback_fn: FeedbackFn,
        *,
        indices: Sequence[int],
        failure_score: float,
        values: dict[str, Any] | None = None,
    ) -> list[Evaluation]: ...

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

    def __init__(
        self,
        examples: Sequence[Any],
        indices: Sequence[int],
        feedback_fn: FeedbackFn,
        failure_score: float,
        nonfinite: str,
    ) -> None:
        self.examples, self.indices = examples, list(indices)
        self.feedback_fn, self.failure_score, self.nonfinite = feedback_fn, failure_score, nonfinite
        self.results: list[Evaluation | None] = [None] * len(examples)
        self.cancelled = threading.Event()
        self.done: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.started: dict[int, float] = {}
        self.on_result = run_listener()  # progress: each finished run, as it finishes (engine.events)

    def score(self, position: int, output: Any, graph: Graph, seconds: float) -> None:
        self.results[position] = evaluation = finish(
            self.indices[position],
            self.examples[position],
            output,
            graph,
            self.feedback_fn,
            self.failure_score,
            seconds,
            self.nonfinite,
        )
        if self.on_result is not None:
            self.on_result(evaluation)

    def fail(self, position: int, what: str, exc: BaseException, seconds: float = 0.0) -> None:
        self.score(position, *failed_run(what, exc), seconds)

    def collect(
        self, timeout: float | None, cancel: Callable[[], object], on_timeout: Callable[[int], None] | None = None
    ) -> list[Evaluation]:
        """Wait for every run; with ``timeout``, a run that started longer ago fails and ``on_timeout(position)``
        lets the executor give up on it (free its thread, or replace a stuck event loop)."""
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
                            self.fail(
                                position,
                                "timeout",
                                EvaluationTimeout(f"the run took longer than eval_timeout={timeout:g}s"),
                                now - self.started[position],
                            )
                            if on_timeout is not None:
                                on_timeout(position)
        except BaseException:  # Ctrl-C or a feedback error: nothing outstanding may keep running
            cancel()
            raise
        return [r for r in self.results if r is not None]


class InProcessExecutor:
    """What the executors that run in this process share: their settings, the batch in flight, and
    stopping it (`cancel`: runs not started are dropped, running ones abandoned or cancelled)."""

    def __init__(self, concurrency: int = 1, nonfinite: str = "error", *, eval_timeout: float | None = None) -> None:
        self.concurrency = check_concurrency(concurrency)
        self.nonfinite = nonfinite
        self.eval_timeout = eval_timeout
        self._batch: _Batch | None = None
        self._pool: DaemonPool | None = None  # threads for sync runs, made on first use

    def cancel(self) -> None:
        """Stop the batch being evaluated (Ctrl-C, a STOP file)."""
        batch = self._batch
        if batch is not None:
            batch.cancelled.set()

    def close(self) -> None:
        """Stop the batch in flight and let the threads go; the executor can be used again after."""
        self.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
