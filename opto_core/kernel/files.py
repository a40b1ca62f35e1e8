"""Writing files so that a crash at any instant leaves the old content or the new, never half of it.

Every file the core writes whole (checkpoints, values files, configs, graphs, the history when a
resume cuts it, reports) goes through `write_text_atomic`: a temporary file in the same folder,
fsync, rename. Lone surrogates are escaped instead of crashing
the write. ``_write_point`` is the fault-injection hook the kill-at-every-write tests use.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import tempfile
import uuid
from pathlib import Path
from typing import Any

from opto_core.kernel.redact import redact


def dumps(data: Any, *, strict: bool = False, indent: int | None = None) -> str:
    """JSON text that can always be written as UTF-8 and holds no secret: readable non-ASCII, escaped
    lone surrogates, secrets and URL credentials replaced (`opto_core.kernel.redact`).

    ``strict`` refuses NaN and infinities (checkpoints are read by other tools).
    """
    text = json.dumps(data, ensure_ascii=False, indent=indent, default=repr, allow_nan=not strict)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: \uXXXX escapes are valid JSON and read back the same
        text = json.dumps(data, ensure_ascii=True, indent=indent, default=repr, allow_nan=not strict)
    return redact(text)  # no file of ours ever holds a secret


def _write_point(label: str) -> None:
    """A test hook for fault injection: ``OPTO_RUNDIR_KILL_AT=K`` kills this process (SIGKILL) at the
    K-th write point; ``OPTO_RUNDIR_FAIL_AT=K:ENOSPC`` makes the K-th write fail as a full disk would
    (any errno name: ``EROFS``, ``EACCES``...); ``OPTO_RUNDIR_WRITE_LOG=path`` appends each point's label
    to a file. Costs one environment lookup per write when unset."""
    kill_at = os.environ.get("OPTO_RUNDIR_KILL_AT")
    fail_at = os.environ.get("OPTO_RUNDIR_FAIL_AT")
    log_path = os.environ.get("OPTO_RUNDIR_WRITE_LOG")
    if not kill_at and not log_path and not fail_at:
        return
    global _WRITES
    _WRITES += 1
    if log_path:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{_WRITES} {label}\n")
    if kill_at and int(kill_at) == _WRITES:
        os.kill(os.getpid(), signal.SIGKILL)
    if fail_at:
        point, _, name = fail_at.partition(":")
        if int(point) == _WRITES:
            code = getattr(errno, name or "ENOSPC")
            raise OSError(code, os.strerror(code), label)


_WRITES = 0


def write_text_atomic(path: str | os.PathLike[str], text: str, *, private: bool = True) -> None:
    """Write ``text`` (UTF-8) so that a crash at any instant leaves the old file or the new one:
    a temporary file in the same folder, fsync, rename.

    ``private`` files (run files, values) are created readable by their owner only; a file meant to
    be shared (a report) gets the usual permissions of a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_point(f"before {path.name}")
    if private:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        handle = os.fdopen(fd, "w", encoding="utf-8")
    else:  # not mkstemp: its files are private whatever the umask says
        temp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
        handle = open(temp, "w", encoding="utf-8")
    try:
        with handle:
            handle.write(text[: len(text) // 2])
            _write_point(f"half of {path.name}")
            handle.write(text[len(text) // 2 :])
            handle.flush()
            os.fsync(handle.fileno())
        _write_point(f"temp of {path.name}")
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    _write_point(f"after {path.name}")


def write_json_atomic_text(path: str | os.PathLike[str], text: str) -> None:
    """Already-serialised JSON text, secrets redacted, written with `write_text_atomic`."""
    write_text_atomic(path, redact(text))


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, strict: bool = False) -> None:
    """``data`` as indented JSON (see `dumps`), written with `write_text_atomic`."""
    write_text_atomic(path, dumps(data, strict=strict, indent=1))
