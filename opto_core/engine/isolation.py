"""Where a workflow's runs happen: in this process, in killable child processes, or in a confined box.

``optimize(..., isolation=...)`` (`Settings.isolation`, ``opto demo/resume --isolation``):

- ``"none"``: runs happen in this process (the executor's threads or event loop). Exits raised by
  the workflow fail the run; a run past ``eval_timeout`` is abandoned (Python cannot stop a thread).
- ``"process"``: runs happen in worker processes that are killed on ``eval_timeout`` and replaced
  when they end (`opto_core.engine.executors.process`); nothing a run does can end, hang or slow the
  optimization.
- ``"sandbox"`` (or a `opto_core.engine.sandbox.Sandbox` with its options): ``"process"`` plus OS
  confinement of every worker: read-only file system but a scratch directory, no secrets in the
  environment, network only to the workflow's endpoints, CPU, memory, process and file limits.
- ``"auto"`` (the default): ``"process"`` when the target has a trainable ``code`` parameter (the
  LLM writes code that runs), else ``"none"``.

The static code policy stays the first, cheap check either way: code that fails it never runs.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("opto")

ISOLATION_LEVELS = ("none", "process", "sandbox")


def check_isolation(value: Any) -> None:
    """Raise ``ValueError`` naming the choices when ``value`` is not an isolation setting."""
    from opto_core.engine.sandbox import Sandbox

    if value in (None, "auto") or isinstance(value, Sandbox):
        return
    if not isinstance(value, str) or value not in ISOLATION_LEVELS:
        raise ValueError(f"isolation must be 'auto', one of {ISOLATION_LEVELS}, or a Sandbox(...), got {value!r}")


def trainable_code(target: Any) -> list[str]:
    """The names of the target's trainable code parameters (LLM-written code will run)."""
    try:
        return [p.name for p in target.parameters() if p.trainable and p.kind == "code"]
    except Exception:  # a target that cannot list its parameters is caught elsewhere, with a better message
        return []


def resolve_isolation(value: Any, target: Any = None) -> tuple[str, Any]:
    """``(level, sandbox or None)`` for a setting; ``"auto"`` looks at the target's parameters."""
    from opto_core.engine.sandbox import Sandbox

    check_isolation(value)
    if isinstance(value, Sandbox):
        return "sandbox", value
    if value == "sandbox":
        return "sandbox", Sandbox()
    if value in (None, "auto"):
        code = trainable_code(target) if target is not None else []
        return ("process" if code else "none"), None
    return value, None


def is_explicit(value: Any) -> bool:
    """Whether the user asked for a level (rather than leaving it to ``"auto"``)."""
    return value not in (None, "auto")
