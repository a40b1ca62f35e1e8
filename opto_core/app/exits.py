"""The ``opto`` command's exit codes: one per failure class, and a plain message instead of a traceback.

| code | meaning |
|---|---|
| 0 | the run ended as planned: its steps, a budget, the target score, a STOP file, one Ctrl-C |
| 1 | the run stopped on an error of the run: the optimizer's LLM failed after its retries, too many failed runs (``max_errors``), every run failed outside the workflow (``all_runs_failed``), the model provider failed every run of an evaluation after its retries (``provider_error``), invalid values, feedback reaches no trainable parameter (``CoverageError``) |
| 2 | a usage error: a bad option or setting, a directory that holds no run of ours, a run locked by another process, an unknown or broken recipe, a missing extra, a sandbox this machine cannot build, a target that cannot travel to a worker |
| 3 | the run directory is damaged (`CorruptRun`): the message names the file and the way out |
| 4 | the run directory cannot be written: the disk is full or read-only, or access is denied (nothing saved is lost) |
| 5 | the feedback function raised, or returned something that is not feedback |
| 130 | interrupted (a second Ctrl-C) |

The table is in the README too. `exit_code` maps an exception to its code (None: not a user
error, a bug, whose traceback is worth seeing).
"""

from __future__ import annotations

OK = 0
RUN_FAILED = 1
USAGE = 2
CORRUPT_RUN = 3
UNWRITABLE = 4
FEEDBACK = 5
INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    OK: "the run ended as planned (steps, budget, target score, STOP file, one Ctrl-C)",
    RUN_FAILED: "the run stopped on an error (optimizer LLM failure, max_errors, every run failed, provider errors, invalid values)",
    USAGE: "usage error (bad option or setting, not a run directory, locked run, unknown or broken recipe)",
    CORRUPT_RUN: "the run directory is damaged (CorruptRun)",
    UNWRITABLE: "the run directory cannot be written (disk full, read-only, permission denied)",
    FEEDBACK: "the feedback function raised or returned something that is not feedback",
    INTERRUPTED: "interrupted (a second Ctrl-C)",
}


def exit_code(exc: BaseException) -> int | None:
    """The exit code for a user-facing error, or None for anything else."""
    from opto_core.engine.coverage import CoverageError
    from opto_core.engine.executors import FeedbackError
    from opto_core.engine.executors.payload import SecretInPayload, TargetNotPicklable
    from opto_core.engine.rundir import CorruptRun, RunDirError, RunDirUnwritable
    from opto_core.engine.sandbox import SandboxUnavailable
    from opto_core.engine.settings import SettingError

    if isinstance(exc, CorruptRun):
        return CORRUPT_RUN
    if isinstance(exc, RunDirUnwritable):
        return UNWRITABLE
    if isinstance(exc, RunDirError):
        return USAGE
    if isinstance(exc, FeedbackError):
        return FEEDBACK
    if isinstance(exc, (SettingError, SandboxUnavailable, TargetNotPicklable, SecretInPayload)):
        return USAGE
    if isinstance(exc, ImportError):  # an extra the command needs is not installed: the message names it
        return USAGE
    if isinstance(exc, CoverageError):  # stopped before any optimizer call: feedback reaches no parameter
        return RUN_FAILED
    return None
