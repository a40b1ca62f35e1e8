"""`ProcessExecutor`: every evaluation runs in a child process that can be killed (``isolation="process"``).

Python cannot stop a thread, and code that calls ``os._exit`` or spins forever takes its process
with it. So with ``isolation="process"`` the workflow runs in worker processes and the driver
(this process: the loop, the optimizer, the run directory) only sends examples and reads answers:

- **Workers are reused** across examples and batches, ``concurrency`` of them, one example at a time
  each, so a worker's failure is exactly one example's. Each request carries the step's values;
  the worker applies them when they changed (`opto_core.engine.executors.child`).
- **A run past ``eval_timeout`` is killed** with its whole process group (default 600 s when no
  timeout is set: a run that never returns must not hang the optimization). The example fails as an
  infrastructure failure (the step is never kept), and a fresh worker takes the place of the old one.
  A worker that ends during a run (``os._exit``, a signal, a crash) is the same: that example, and
  only that one, is charged; an idle worker that ends is replaced without charging anyone.
  `SystemExit` and `KeyboardInterrupt` raised by the workflow fail the run inside the worker.
- **The driver always exits**: workers are in their own sessions (Ctrl-C reaches the driver,
  which cancels), die with their parent (Linux ``PR_SET_PDEATHSIG``), and are killed by `close`.

How workers start (``start_method``):

- ``"fork"`` (the default on Linux without a ``target_factory``): the workflow is the driver's own,
  copied by fork, so it need not pickle. Forking a process that runs threads is unsafe (a lock another
  thread held is held forever in the child), so the executor forks *once*, when it starts (before
  the loop starts any thread of its own), into a single-threaded **worker template** that holds the
  workflow and forks every worker, later replacements included. If other threads already run when
  the template is made (a framework's pool, your own), it says so once, naming them. Network
  connections the workers inherit are detached (replaced by ``/dev/null``), so a pooled HTTP
  connection is never shared by two processes: clients open their own.
- ``"spawn"`` (with a ``target_factory``, on macOS and Windows, and always in the sandbox): each
  worker is a fresh interpreter that builds the workflow from the pickled ``target_factory`` or the
  target pickled with cloudpickle (`opto_core.engine.executors.payload`).

What comes back is data only, never a pickle to trust (`opto_core.engine.executors.transfer`). What
the workflow changes in its own objects stays in the worker (as on a Ray worker).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pickle
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

from opto_core.engine.executors.child import die_with_parent, leave_terminal_signals, serve
from opto_core.engine.executors.common import (
    Evaluation,
    EvaluationCancelled,
    EvaluationTimeout,
    FeedbackFn,
    InfrastructureError,
    _Batch,
    check_concurrency,
    failed_run,
)
from opto_core.engine.executors.transfer import decode_output, loads_message
from opto_core.kernel.code import runs_elsewhere
from opto_core.kernel.graph import Graph

log = logging.getLogger("opto")

#: Seconds a run may take when ``eval_timeout`` is not set: isolation never waits forever.
DEFAULT_EVAL_TIMEOUT = 600.0
#: Seconds a fresh worker may take to build the workflow and say it is ready.
STARTUP_TIMEOUT = 120.0
#: The largest answer a worker may send (bytes); a bigger one is the worker's failure.
MAX_MESSAGE = 256 * 1024 * 1024

START_METHODS = ("fork", "spawn")

#: The directory that holds this opto_core package (fresh workers import it from there).
_OPTO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


#: After a worker dies, how long to wait for its template to end too before the death is the worker's
#: own: the kernel kills the children first, and on a loaded machine the template is reaped a moment
#: later (0.3 s proved too short on two busy cores). Paid in full only when a worker dies on its own.
TEMPLATE_GRACE_SECONDS = 1.0


class WorkerLost(InfrastructureError):
    """The worker process ended (or was killed) while it ran this example."""


class WroteAroundOptimizer(RuntimeError):
    """The run changed a parameter's value behind the loop's back (seen in the worker, which then retires)."""


def process_isolation_here() -> bool:
    """Whether worker processes can be used here (POSIX: socket pairs and passing descriptors to children)."""
    return os.name == "posix"


def fork_is_safe_here() -> bool:
    """Whether ``fork`` is this platform's sound default (Linux; macOS frameworks break in forked children)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


# ----- the worker template (fork) --------------------------------------------------------------------------
class WorkerTemplate:
    """A single-threaded child forked once from the driver; it holds the workflow and forks every worker.

    Requests and answers go over a ``SOCK_SEQPACKET`` socket: ``spawn`` gets back the new worker's
    pid with its end of a socket pair (passed as a file descriptor); the template reaps the workers
    and reports how each ended.
    """

    def __init__(self, target: Any) -> None:
        others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        if others:
            log.warning(
                "isolation='process': making the worker template by fork while %d other thread(s) run "
                "(%s); a lock one of them holds right now stays locked in the workers (a worker stuck on "
                "it is killed after eval_timeout). Pass target_factory= to start workers as fresh "
                "interpreters instead.",
                len(others),
                ", ".join(others[:6]),
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the template
            try:
                ours.close()
                _template_main(theirs, target, parent)
            finally:
                os._exit(1)
        theirs.close()
        self.pid, self._sock = pid, ours
        self._sock.settimeout(30.0)
        self.exits: dict[int, int] = {}
        self._ended = False

    def spawn(self) -> tuple[int, Connection]:
        """A new worker: its pid and the driver's end of its socket."""
        self._sock.send(b"spawn")
        while True:
            data, fds, _, _ = socket.recv_fds(self._sock, 4096, 1)
            if not data:
                raise InfrastructureError("the worker template ended; no worker can be started")
            message = json.loads(data)
            if "exit" in message:
                self.exits[message["exit"]] = message["status"]
                continue
            if not fds:
                raise InfrastructureError(f"the worker template answered without a socket: {message}")
            return int(message["pid"]), Connection(fds[0])

    def exit_status(self, pid: int, within: float = 0.5) -> int | None:
        """How worker ``pid`` ended (an exit code, or minus the signal), if the template reported it in time."""
        deadline = time.monotonic() + within
        while pid not in self.exits and not self._ended:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                    break
            except (OSError, ValueError):  # the template is gone and its socket closed
                break
            try:
                data = self._sock.recv(4096)
            except OSError:
                break
            if not data:
                break
            message = json.loads(data)
            if "exit" in message:
                self.exits[message["exit"]] = message["status"]
        return self.exits.pop(pid, None)

    def ends_within(self, seconds: float) -> bool:
        """Whether the template has ended, or ends within ``seconds``.

        Its workers die with it slightly before it can be reaped (the kernel signals the children first),
        so a worker's death may be seen a moment before the template's.
        """
        deadline = time.monotonic() + seconds
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def alive(self) -> bool:
        """Whether the template still runs (it is our child: an ended one is reaped here)."""
        if self._ended:
            return False
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        self._ended = pid != 0
        return not self._ended

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            if not self._ended:
                _kill_group(self.pid)
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    pass
                self._ended = True


#: Signals the template ignores (its workers restore the defaults): only SIGKILL and SIGSTOP can end it.
_TEMPLATE_IGNORES = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM")
    if hasattr(signal, name)
)


def _template_main(sock: socket.socket, target: Any, parent: int) -> None:
    die_with_parent(parent)
    leave_terminal_signals()
    for number in _TEMPLATE_IGNORES:
        signal.signal(number, signal.SIG_IGN)
    _detach_inherited_sockets(keep={sock.fileno()})
    me = os.getpid()
    while True:
        readable = select.select([sock], [], [], 0.2)[0]
        while True:  # reap the workers that ended, and say how
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            try:
                sock.send(json.dumps({"exit": pid, "status": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:
                os._exit(0)
        if not readable:
            continue
        try:
            request = sock.recv(64)
        except OSError:
            os._exit(0)
        if not request:
            os._exit(0)  # the driver is gone
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # a worker
            try:
                for number in _TEMPLATE_IGNORES:
                    signal.signal(number, signal.SIG_DFL)
                signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python starts: a broken pipe is an error
                sock.close()
                ours.close()
                die_with_parent(me)
                leave_terminal_signals()
                serve(Connection(theirs.detach()), target)
            finally:
                os._exit(1)
        theirs.close()
        socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [ours.fileno()])
        ours.close()


def _detach_inherited_sockets(keep: set[int]) -> None:
    """Replace every inherited socket by /dev/null: a connection must never be shared by two processes."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        if fd in keep or fd == null:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.dup2(null, fd)
        except OSError:
            continue
    os.close(null)


def _kill_group(pid: int) -> None:
    """SIGKILL ``pid``'s process group (a worker leads its own), or ``pid`` alone."""
    try:
        os.killpg(pid, signal.SIGKILL)
        return
    except (OSError, AttributeError):
        pass
    try:
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    except OSError:
        pass


def describe_exit(status: int | None) -> str:
    """How a process ended, in words."""
    if status is None:
        return "ended"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with code {status}"


# ----- one worker, seen from the driver ------------------------------------------------------------------------
class _Worker:
    def __init__(
        self,
        pid: int,
        conn: Connection,
        process: subprocess.Popen[bytes] | None = None,
        template: WorkerTemplate | None = None,
        boxed: bool = False,
    ) -> None:
        self.pid, self.conn, self.process, self.template, self.boxed = pid, conn, process, template, boxed
        self.ready = False
        self.position: int | None = None
        self.sent_at = 0.0
        self.born = time.perf_counter()
        self.values: Any = None
        self.runs = 0
        self.suspect = False  # runs an example that was lost with the template: alone, so it is charged if it was

    @property
    def name(self) -> str:
        return f"pid {self.pid}"

    def kill(self) -> None:
        _kill_group(self.pid)
        try:
            self.conn.close()
        except OSError:
            pass
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def end_text(self) -> str:
        """How the worker ended (waiting briefly for the exit status)."""
        if self.process is not None:
            try:
                status: int | None = self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                status = None
            if self.boxed and status is not None and 128 < status < 128 + 65:
                status = 128 - status  # bubblewrap exits with 128 + the signal that ended the worker in the box
        elif self.template is not None:
            status = self.template.exit_status(self.pid)
        else:
            status = None
        return f"the worker process ({self.name}) {describe_exit(status)}"


Launcher = Callable[[], _Worker]


# ----- the executor ----------------------------------------------------------------------------------------
class ProcessExecutor:
    """Runs each example in a reusable child process that is killed when the run must end.

    ``start_method``: ``"fork"`` or ``"spawn"`` (default: fork on Linux without a ``target_factory``,
    else spawn; see the module's docstring). ``sandbox``: an `opto_core.engine.sandbox.Sandbox` whose
    confinement wraps every worker (implies spawn). Call `start` with the target before the
    loop starts threads (`make_executor` does); `evaluate` starts it otherwise.
    """

    def __init__(
        self,
        concurrency: int = 1,
        nonfinite: str = "error",
        *,
        eval_timeout: float | None = None,
        target_factory: Callable[[], Any] | None = None,
        start_method: str | None = None,
        sandbox: Any = None,
    ) -> None:
        if not process_isolation_here():
            raise NotImplementedError(
                f"isolated worker processes need a POSIX system (they pass sockets to their "
                f"workers); {sys.platform} has none. Run under WSL or in a Linux container, or "
                f"use isolation='none'"
            )
        self.concurrency = check_concurrency(concurrency)
        self.nonfinite = nonfinite
        self.eval_timeout = eval_timeout
        self.target_factory = target_factory
        self.sandbox = sandbox
        if start_method is None:
            start_method = "fork" if (fork_is_safe_here() and target_factory is None and sandbox is None) else "spawn"
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, got {start_method!r}")
        if start_method == "fork" and (sandbox is not None or not hasattr(os, "fork")):
            raise ValueError(
                "start_method='fork' is not possible here"
                + (" (the sandbox starts fresh interpreters)" if sandbox is not None else "")
            )
        self.start_method = start_method
        self.workers: list[_Worker] = []
        self.replaced = 0  # workers killed or lost and replaced, over the executor's life
        self._template: WorkerTemplate | None = None
        self._payload: tuple[str, bytes] | None = None
        self._target_id: int | None = None
        self._target: Any = None
        self._suspects: collections.deque[int] = collections.deque()  # lost with the template: run again alone
        self._batch: _Batch | None = None
        self._said_timeout = False
        self._setup: dict[str, Any] | None = None
        self._elsewhere = False  # this process said its runs happen in workers (`opto_core.kernel.code.runs_elsewhere`)

    # ----- starting workers --------------------------------------------------------------------------------
    def start(self, target: Any) -> None:
        """Prepare to run ``target``: make the worker template (fork) or the payload (spawn). Idempotent."""
        if self._target_id == id(target) and (self._template is None or self._template.alive()):
            return
        self._stop_workers()
        if self.start_method == "fork":
            self._template = WorkerTemplate(target)
            log.info("isolation: workers are forked from a template process (pid %d)", self._template.pid)
        else:
            from opto_core.engine.executors.payload import make_payload

            allowed = frozenset(getattr(self.sandbox, "pass_env", ()) or ())
            where = "isolation='sandbox'" if self.sandbox is not None else "isolation='process' (spawn)"
            if self.sandbox is not None:
                self.sandbox.prepare(target)  # first: a machine without the required layers says so at once
            self._payload = make_payload(target, self.target_factory, where, allowed)
        self._target_id, self._target = id(target), target
        if not self._elsewhere:  # after the fork: the template and its workers run what they compile
            runs_elsewhere(True)
            self._elsewhere = True

    def _launch(self) -> _Worker:
        if self._template is not None:
            if not self._template.alive():  # killed by a run (its workers' parent), or by anyone: make another
                log.warning("isolation: the worker template (pid %d) ended; forking a new one", self._template.pid)
                self._template.close()
                self._template = WorkerTemplate(self._target)
            pid, conn = self._template.spawn()
            return _Worker(pid, conn, template=self._template)
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "opto_core.engine.executors.child",
            str(theirs.fileno()),
            str(0 if self.sandbox is not None else os.getpid()),
        ]
        if self.sandbox is not None:
            command, env, cwd = self.sandbox.wrap(command, keep_fds=[theirs.fileno()])
        else:  # a fresh interpreter must find this very opto_core, whatever the caller's PYTHONPATH
            env, cwd = dict(os.environ), None
            env["PYTHONPATH"] = os.pathsep.join(
                [_OPTO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != _OPTO_ROOT]
            )
        try:
            process = subprocess.Popen(
                command, pass_fds=[theirs.fileno()], env=env, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        setup = {
            "sys_path": [os.path.abspath(p or os.curdir) for p in sys.path],
            "payload": self._payload,
            "confine": self.sandbox.inside() if self.sandbox is not None else None,
        }
        conn.send_bytes(pickle.dumps(setup, protocol=pickle.HIGHEST_PROTOCOL))
        return _Worker(process.pid, conn, process=process, boxed=self.sandbox is not None)

    # ----- one batch ---------------------------------------------------------------------------------------
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
        self.start(target)
        timeout = self.eval_timeout
        if timeout is None:
            timeout = DEFAULT_EVAL_TIMEOUT
            if not self._said_timeout:
                self._said_timeout = True
                log.info("isolation: no eval_timeout set; a run still going after %g s is killed", timeout)
        batch = self._batch = _Batch(examples, indices, feedback_fn, failure_score, self.nonfinite)
        pending: collections.deque[int] = collections.deque(range(len(examples)))
        self._suspects = collections.deque()
        seen_by: dict[int, str] = {}
        drifts: dict[int, list[str]] = {}
        frameworks = tuple(filter(None, {str(getattr(target, "framework", "") or "")} - {"python"}))
        build_failures = 0
        try:
            while pending or self._suspects or any(w.position is not None for w in self.workers):
                if batch.cancelled.is_set():
                    pending.extend(self._suspects)
                    self._cancel_batch(batch, pending)
                    break
                self._hand_out(pending, examples, values, batch)
                starting = sum(1 for w in self.workers if not w.ready)
                while len(pending) + len(self._suspects) > starting and len(self.workers) < self.concurrency:
                    try:
                        self.workers.append(self._launch())
                    except Exception as exc:  # the template died, fork/exec failed, bwrap missing...
                        self._fail_all(batch, pending, InfrastructureError(f"starting a worker failed: {exc}"))
                        break
                    starting += 1
                busy = [w for w in self.workers if w.position is not None or not w.ready]
                if not busy:
                    continue
                for conn in wait([w.conn for w in busy], timeout=0.05):
                    worker = next(w for w in busy if w.conn is conn)
                    failure = self._receive(worker, batch, seen_by, drifts, frameworks)
                    if failure is not None:  # the workflow could not be built: count, and give up after two
                        build_failures += 1
                        if build_failures >= 2 or not self.workers:
                            self._fail_all(batch, pending, failure)
                now = time.perf_counter()
                for worker in list(self.workers):
                    if worker.position is not None and now - worker.sent_at > timeout:
                        position = worker.position
                        self._drop(worker, why="a run exceeded eval_timeout")
                        batch.fail(
                            position,
                            "timeout",
                            EvaluationTimeout(
                                f"the run took longer than eval_timeout={timeout:g}s; its worker process was killed"
                            ),
                            now - worker.sent_at,
                        )
                        seen_by[position] = worker.name
                    elif not worker.ready and now - worker.born > STARTUP_TIMEOUT:
                        self._drop(worker, why="it did not start in time")
                        build_failures += 1
                        if build_failures >= 2 or not self.workers:
                            self._fail_all(
                                batch,
                                pending,
                                InfrastructureError(f"a worker did not build the workflow within {STARTUP_TIMEOUT:g}s"),
                            )
        except BaseException:  # Ctrl-C or a feedback error: nothing may keep running for this batch
            for worker in [w for w in self.workers if w.position is not None]:
                self._drop(worker, why="the batch stopped")
            raise
        finally:
            self._batch = None
        results = [r for r in batch.results if r is not None]
        for position, evaluation in enumerate(results):
            evaluation.worker = seen_by.get(position, "")
            if position in drifts:
                evaluation.drift = drifts[position]
        return results

    def _hand_out(
        self, pending: collections.deque[int], examples: Sequence[Any], values: dict[str, Any] | None, batch: _Batch
    ) -> None:
        """Give idle workers examples; an example under suspicion runs alone (see `_receive`)."""
        if any(w.suspect and w.position is not None for w in self.workers):
            return
        idle = [w for w in self.workers if w.ready and w.position is None]
        if self._suspects:
            # alone, and on a worker of a living template: one forked just as a run killed the template dies
            # with it, and the suspect would be charged for a death that was not its own
            idle = [w for w in idle if w.template is None or w.template.alive()]
            if idle and not any(w.position is not None for w in self.workers):
                position = self._suspects.popleft()
                if self._send(idle[0], position, examples, values, batch):
                    idle[0].suspect = True
                else:
                    self._suspects.appendleft(position)
            return
        for worker in idle:
            if not pending:
                break
            position = pending.popleft()
            if not self._send(worker, position, examples, values, batch):
                pending.appendleft(position)  # an idle worker that died: nobody is charged

    def _send(
        self, worker: _Worker, position: int, examples: Sequence[Any], values: dict[str, Any] | None, batch: _Batch
    ) -> bool:
        """Give ``worker`` the example; False when the worker turned out to be gone (the example waits)."""
        changed = values if values != worker.values else None
        try:
            request = pickle.dumps(("run", changed, examples[position]), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            batch.fail(
                position,
                "sending the example",
                InfrastructureError(
                    f"the example (or the step's values) cannot be pickled for the worker: {type(exc).__name__}: {exc}"
                ),
            )
            return True
        try:
            worker.conn.send_bytes(request)
        except OSError as exc:  # the worker ended while idle: replace it, nobody is charged
            self._drop(worker, why=f"it ended while idle ({exc})")
            return False
        if changed is not None:
            worker.values = changed
        worker.position, worker.sent_at = position, time.perf_counter()
        batch.started[position] = worker.sent_at
        return True

    def _receive(
        self,
        worker: _Worker,
        batch: _Batch,
        seen_by: dict[int, str],
        drifts: dict[int, list[str]],
        frameworks: tuple[str, ...],
    ) -> BaseException | None:
        """Read one message from ``worker``; returns the error when the worker could not build the workflow."""
        position = worker.position
        try:
            message = loads_message(worker.conn.recv_bytes(MAX_MESSAGE))
        except (EOFError, OSError) as exc:
            text = worker.end_text()
            self._drop(worker, why=text.replace("the worker process ", "it ", 1))
            if position is None:
                if isinstance(exc, OSError) and not isinstance(exc, EOFError) and "too long" in str(exc):
                    return None
                if worker.template is not None and worker.template.ends_within(TEMPLATE_GRACE_SECONDS):
                    return None  # forked just as a run killed the template, it died with it: not a broken build
                return InfrastructureError(f"a worker ended before it was ready: {text}")
            if worker.template is not None and worker.template.ends_within(TEMPLATE_GRACE_SECONDS):
                if not worker.suspect:
                    # the template ended (a run killed it) and took every worker with it; which run did it is
                    # unknown, so each example it cost runs again, alone and uncharged: the culprit fails then
                    self._suspects.append(position)
                    return None
                text = "the worker template (the workers' parent) was killed by this example's run, which ran alone,"
            cause = "sent an answer larger than the limit" if "too long" in str(exc) else text
            batch.fail(
                position,
                "worker",
                WorkerLost(f"{cause} while it ran this example"),
                time.perf_counter() - worker.sent_at,
            )
            seen_by[position] = worker.name
            return None
        except ValueError as exc:  # not JSON, not an object: the worker broke the protocol
            self._drop(worker, why="it broke the protocol")
            if position is not None:
                batch.fail(position, "worker", WorkerLost(f"the worker sent a malformed answer ({exc})"))
                seen_by[position] = worker.name
            return None
        kind = message.get("kind")
        if kind == "ready":
            worker.ready = True
            return None
        if kind == "failed":
            from opto_core.engine.executors.transfer import rebuild_exception

            self._drop(worker, why="building the workflow failed")
            error = rebuild_exception(message.get("error", {}))
            return InfrastructureError(f"building the workflow in a worker failed: {type(error).__name__}: {error}")
        if kind != "result" or position is None:
            self._drop(worker, why="it broke the protocol")
            if position is not None:
                batch.fail(position, "worker", WorkerLost(f"the worker sent an unexpected {kind!r} message"))
            return None
        worker.position, worker.suspect = None, False
        worker.runs += 1
        seen_by[position] = worker.name
        if message.get("unapplied"):  # the worker kept its old values: send them again next time
            worker.values = None
        try:
            output = decode_output(message["output"], frameworks)
            graph = Graph.from_dict(message["graph"]) if message.get("graph") is not None else None
            drift = [str(name) for name in message.get("drift") or []]
            seconds = float(message.get("seconds", 0.0))
        except Exception as exc:  # a malformed graph or output: the worker's answer cannot be trusted
            self._drop(worker, why="it sent a malformed result")
            batch.fail(position, "worker", WorkerLost(f"the worker sent a malformed result: {exc}"))
            return None
        if graph is None:
            output, graph = failed_run(
                "worker", output if isinstance(output, BaseException) else InfrastructureError(str(output))
            )
        if drift:  # the worker retires on its own after such a run
            drifts[position] = drift
            self._drop(worker, why="a run changed parameter values behind the loop", kill=False)
            output, graph = failed_run(
                "worker",
                WroteAroundOptimizer(
                    f"a run wrote around the optimizer ({', '.join(f'{name}: its value changed' for name in drift)}); "
                    f"values change only through the optimizer's proposals, so the run failed and its worker, "
                    f"which held the changed values, was replaced"
                ),
            )
        batch.score(position, output, graph, seconds)
        scored = batch.results[position]
        if drift and scored is not None:
            scored.error_kind = "wrote_around"  # the loop rolls such a step back
        return None

    def _drop(self, worker: _Worker, why: str, kill: bool = True) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
            self.replaced += 1
            log.warning("isolation: replacing worker %s (%s)", worker.name, why)
        if kill:
            worker.kill()
        else:
            try:
                worker.conn.close()
            except OSError:
                pass

    def _fail_all(self, batch: _Batch, pending: collections.deque[int], error: BaseException) -> None:
        while pending:
            batch.fail(pending.popleft(), "worker", error)

    def _cancel_batch(self, batch: _Batch, pending: collections.deque[int]) -> None:
        for worker in [w for w in self.workers if w.position is not None]:
            position = worker.position
            self._drop(worker, why="the batch was cancelled")
            if position is not None:
                batch.fail(position, "cancelled", EvaluationCancelled("the run was cancelled; its worker was killed"))
        self._fail_all(batch, pending, EvaluationCancelled("the run was cancelled"))

    # ----- stopping ----------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the batch being evaluated: running workers are killed, runs not started are dropped."""
        batch = self._batch
        if batch is not None:
            batch.cancelled.set()

    def worker_pids(self) -> list[int]:
        """The process id of every live worker (for tests and diagnostics)."""
        return [w.pid for w in self.workers]

    def _stop_workers(self) -> None:
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.kill()
        template, self._template = self._template, None
        if template is not None:
            template.close()
        self._target_id = None

    def close(self) -> None:
        """Kill every worker (and the template); the executor can start again after."""
        self.cancel()
        self._stop_workers()
        if self._elsewhere:
            runs_elsewhere(False)
            self._elsewhere = False
        if self.sandbox is not None:
            self.sandbox.cleanup()
