"""Code that tries to end the process: `SystemExit` and `KeyboardInterrupt` raised by a workflow.

Both derive from `BaseException`, so ``except Exception`` (how every target turns a workflow's error
into feedback) lets them through, and they end the thread, the event loop or the whole process that
runs the workflow. Where a run happens (the executors, a trainable op running its code value) they
are caught and replaced by `WorkflowExit`, an ordinary exception: the run fails as the workflow's own
failure, its text reaches the optimizer, and the optimization goes on.
"""

from __future__ import annotations

#: What workflow code may raise to end a process.
EXITS = (SystemExit, KeyboardInterrupt)


class WorkflowExit(Exception):
    """The workflow raised `SystemExit` or `KeyboardInterrupt` (the original is its ``__cause__``)."""


def exit_as_failure(exc: BaseException, where: str = "the workflow") -> WorkflowExit:
    """`WorkflowExit` for a `SystemExit`/`KeyboardInterrupt` a run raised, the original as its cause."""
    code = f"({exc.code!r})" if isinstance(exc, SystemExit) else ""
    wrapped = WorkflowExit(
        f"{where} raised {type(exc).__name__}{code}: code that tries to end the process fails the run instead"
    )
    wrapped.__cause__ = exc
    return wrapped
