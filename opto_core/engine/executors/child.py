"""The worker side of isolated evaluation: a process that holds the workflow and runs one example at a time.

A worker is either forked from the worker template (``isolation="process"``, the default way on
Linux: the workflow is the driver's own, copied by fork, nothing pickled) or a fresh interpreter
(``python -m opto_core.engine.executors.child FD PARENT_PID``: with a ``target_factory``, on
platforms without a safe fork, and always inside the sandbox), which first receives its setup (the
driver's ``sys.path``, the sandbox's limits, and the workflow as a pickled factory or target).

Then both serve the same requests on one socket: ``("run", values, example)``, pickled by the
driver. The worker applies ``values`` when they differ from the ones it holds (the loop's values
for this step), runs the example with every exit caught (`SystemExit`, `KeyboardInterrupt`: the
run fails), and answers in JSON (`opto_core.engine.executors.transfer`). After a run that changed
a parameter's value behind the loop's back, it answers, says which values changed, and retires:
its state is no longer what the loop set.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, NoReturn

from opto_core.engine.executors.common import InfrastructureError, _run_one
from opto_core.engine.executors.transfer import describe_exception, dumps_message, encode_output

#: Linux prctl option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make sure this process ends when ``parent_pid`` does (Linux: PR_SET_PDEATHSIG; elsewhere a check)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(0)


def leave_terminal_signals() -> None:
    """A worker is in its own session: Ctrl-C in the terminal reaches the driver only (which cancels)."""
    try:
        os.setsid()
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def all_values(target: Any) -> dict[str, str]:
    """Every parameter's value (trainable or not) as exact JSON text, by name."""
    return {p.name: _exact(p.value) for p in target.parameters()}


def _exact(value: Any) -> str:
    """A value's JSON text: equal texts are equal values of equal types (``1``, ``1.0`` and ``true`` differ)."""
    return json.dumps(value, sort_keys=True, default=repr)


def changed_parameters(target: Any, applied: dict[str, str] | None, before: dict[str, str] | None) -> list[str]:
    """The parameters a run changed behind the loop: those no longer holding what was applied (exact
    JSON texts, `all_values`), or differing from ``before`` the run (frozen ones too)."""
    try:
        now = all_values(target)
    except Exception as exc:  # reading the values failed: the worker's state is in doubt
        return [f"(reading the values failed: {type(exc).__name__})"]
    drift = {name for name, text in (applied or {}).items() if now.get(name) != text}
    if before is not None:
        drift |= {name for name in before.keys() | now.keys() if before.get(name) != now.get(name)}
    return sorted(drift)


def values_before_run(target: Any) -> dict[str, str] | None:
    """`all_values` before a run, or None when they cannot be read (then only the applied ones are compared)."""
    try:
        return all_values(target)
    except Exception:
        return None


def serve(conn: Connection, target: Any, before_run: Callable[[], None] | None = None) -> NoReturn:
    """Answer run requests until the driver closes the socket or asks to stop; never returns.

    ``before_run`` is called before each run (the sandbox moves its per-run CPU limit there).
    """
    applied: dict[str, Any] | None = None
    send = conn.send_bytes
    send(dumps_message({"kind": "ready", "pid": os.getpid()}))
    while True:
        try:
            request = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)
        if request[0] != "run":
            os._exit(0)
        _, values, example = request
        if values is not None and values != applied:
            try:
                target.apply(values)
                applied = copy.deepcopy(values)
            except Exception as exc:
                error = InfrastructureError(
                    f"applying the step's values in the worker failed: {type(exc).__name__}: {exc}"
                )
                send(
                    dumps_message(
                        {
                            "kind": "result",
                            "seconds": 0.0,
                            "graph": None,
                            "output": {"error": describe_exception(error)},
                            "drift": [],
                            "unapplied": True,
                        }
                    )
                )
                continue
        if before_run is not None:
            before_run()
        before = values_before_run(target)  # every parameter, frozen ones included: a run may write any of them
        begun = time.perf_counter()
        output, graph = _run_one(target, example)
        seconds = time.perf_counter() - begun
        drift = changed_parameters(
            target, None if applied is None else {name: _exact(value) for name, value in applied.items()}, before
        )
        try:
            message = dumps_message(
                {
                    "kind": "result",
                    "seconds": seconds,
                    "graph": graph.to_dict(),
                    "output": encode_output(output),
                    "drift": drift,
                }
            )
        except Exception as exc:
            error = InfrastructureError(f"the run's result cannot be sent back ({type(exc).__name__}: {exc})")
            message = dumps_message(
                {
                    "kind": "result",
                    "seconds": seconds,
                    "graph": None,
                    "output": {"error": describe_exception(error)},
                    "drift": drift,
                }
            )
        send(message)
        if drift:
            os._exit(0)


def main(argv: list[str]) -> NoReturn:
    """A fresh worker: ``child FD PARENT_PID``; reads its setup, builds the workflow, then serves."""
    fd, parent_pid = int(argv[0]), int(argv[1])
    if parent_pid:  # 0 in the sandbox: bubblewrap ties the box to the driver (--die-with-parent)
        die_with_parent(parent_pid)
    leave_terminal_signals()
    conn = Connection(fd)
    before_run = None
    try:
        setup = pickle.loads(conn.recv_bytes())
        for entry in reversed(setup.get("sys_path", [])):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        confine = setup.get("confine")
        if confine is not None:
            from opto_core.engine.sandbox import confine_inside

            before_run = confine_inside(confine)
        import cloudpickle

        kind, blob = setup["payload"]
        built = cloudpickle.loads(blob)
        target = built() if kind == "factory" else built
    except BaseException as exc:
        try:
            conn.send_bytes(dumps_message({"kind": "failed", "error": describe_exception(exc)}))
        finally:
            os._exit(1)
    serve(conn, target, before_run)


if __name__ == "__main__":
    main(sys.argv[1:])
