"""The run directory: checkpoints, history and graphs of one optimization run, crash-safe.

Layout (documented in docs/run-dir.md):

    run_dir/
      .opto-run          marker: this directory holds a run of ours (only such a directory is ever deleted)
      .lock              held (flock) by the one process running or resuming the run
      config.json        settings of the run (never an API key, never a credential in a URL)
      checkpoint.json    after every finished step: current and best values, optimizer memory, counters
      history.jsonl      one JSON line per finished step (values, scores, proposal, reasoning, usage)
      graphs/step-K.json the graph of one traced run of step K (for the report)
      STOP               create this file to stop the run gracefully after the current step
      report.html        written by `opto report` (and at the end of a run)

The rules that make a kill at any instant harmless:

- ``open`` takes an exclusive lock (a second process gets `RunLocked`), removes temporary files a
  crash left behind, and makes the history agree with the checkpoint: without a checkpoint,
  the history and graphs of the unfinished start are removed (the restart writes step 0 again);
  with one, ``history.jsonl`` keeps exactly one line per step up to the checkpointed step
  (a line written after it, or cut by the crash, is dropped).
- Every JSON file is written to a temporary file, fsynced and renamed, so no file is ever half
  written; history lines are appended and fsynced.
- Every string can be written: a lone surrogate (``"\\ud800"``) is escaped (``\\ud800`` in JSON)
  instead of crashing the write. Checkpoints are strict JSON (``allow_nan=False``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from opto_core.kernel.files import _write_point, dumps, write_json_atomic, write_json_atomic_text
from opto_core.kernel.redact import scrub

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second process
    fcntl = None

RUN_FORMAT = "opto-run/1"
MARKER = ".opto-run"
LOCK = ".lock"
#: The files and folders a run of ours writes (the only ones `clear` removes).
OUR_FILES = ("config.json", "checkpoint.json", "history.jsonl", "graphs", "report.html", "STOP", LOCK, MARKER)
_TEMP = re.compile(r"^\.(checkpoint\.json|config\.json|history\.jsonl|report\.html|step-\d+\.json)\..*\.tmp$"
                   r"|^history\.jsonl\.tmp$")

log = logging.getLogger("opto")


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (not a run of ours, a broken checkpoint...)."""


class CorruptRun(RunDirError, ValueError):
    """A run file that is not valid JSON or not in our format (a ValueError, as ``json`` raises)."""


class RunLocked(RunDirError):
    """Another process holds this run directory (it is running or resuming the same run)."""


class NotARun(RunDirError):
    """A directory that exists but holds no run of ours: it is never deleted or overwritten."""


class RunDir:
    """Reads and writes one run directory. ``open``/``close`` bracket a run (lock, repair)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: Any = None

    # ----- what a directory is ----------------------------------------------------------------------
    @staticmethod
    def is_run(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a run of ours: the marker, or (runs from before the marker) a
        checkpoint in our format."""
        path = Path(path)
        if (path / MARKER).is_file():
            return True
        try:
            data = json.loads((path / "checkpoint.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("format") == RUN_FORMAT

    @staticmethod
    def remove(path: str | os.PathLike[str]) -> bool:
        """Delete a run directory, only if it holds a run of ours (or is empty). Returns whether
        something was deleted; raises `NotARun` for any other directory, and `RunLocked` if a
        process is using the run."""
        path = Path(path)
        if not path.exists():
            return False
        if not path.is_dir():
            raise NotARun(f"{path} is a file, not a run directory; nothing was deleted")
        if not any(path.iterdir()):
            path.rmdir()
            return True
        if not RunDir.is_run(path):
            raise NotARun(f"{path} exists and holds no opto run (no {MARKER} marker): it is never deleted. "
                          f"Choose another --run-dir, or remove it yourself if you are sure")
        store = RunDir(path)
        store._acquire()  # never delete under a running process
        try:
            shutil.rmtree(path)
        finally:
            store.close()
        return True

    # ----- opening and closing a run ------------------------------------------------------------------
    def open(self, resume: bool = True) -> dict[str, Any] | None:
        """Lock the directory, repair it after any crash, and return the checkpoint to resume from.

        ``resume=False`` starts over: our files are cleared (only ours) and None is returned.
        Raises `RunLocked` if another process holds the run, `NotARun` if the directory holds
        files named like ours that are not a run of ours.
        """
        if self.path.exists() and not self.is_run(self.path):
            clash = [name for name in OUR_FILES if (self.path / name).exists() and name not in (LOCK, MARKER)]
            if clash:
                raise NotARun(f"{self.path} holds {', '.join(clash)} but no opto run (no {MARKER} marker); "
                              f"refusing to overwrite them. Choose another run directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            (self.path / MARKER).write_text(json.dumps({"format": RUN_FORMAT}) + "\n", encoding="utf-8")
            self._remove_temp_files()
            checkpoint = self.read_checkpoint() if resume else None
            if checkpoint is None:
                self._clear_progress(config=not resume)
            else:
                self.truncate_history(int(checkpoint.get("step", 0)))
            return checkpoint
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            try:
                if fcntl is not None:
                    fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock.close()
                self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _acquire(self) -> None:
        if self._lock is not None:
            return
        handle = open(self.path / LOCK, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise RunLocked(f"{self.path} is in use by {holder}: one run directory, one process at a time. "
                                f"Wait for it to finish, or stop it (create {self.path / 'STOP'})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def _remove_temp_files(self) -> None:
        graphs = self.path / "graphs"
        entries = [*self.path.iterdir(), *(graphs.iterdir() if graphs.is_dir() else ())]
        for entry in entries:
            if _TEMP.match(entry.name) and entry.is_file():
                entry.unlink()
                log.info("removed %s, left by an interrupted write", entry)

    def _clear_progress(self, config: bool) -> None:
        """No checkpoint: whatever history or graphs exist belong to a start that never finished."""
        for name in ("history.jsonl", "checkpoint.json", *(("config.json",) if config else ())):
            if (self.path / name).exists():
                (self.path / name).unlink()
        if (self.path / "graphs").is_dir():
            shutil.rmtree(self.path / "graphs")

    # ----- files --------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def stop_requested(self) -> bool:
        return (self.path / "STOP").exists()

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.path / "config.json", scrub(config))

    def read_config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CorruptRun(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CorruptRun(f"{path} must hold a JSON object")
        return data

    def read_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            data = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CorruptRun(f"{self.checkpoint_path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise CorruptRun(f"{self.checkpoint_path}: unsupported run format {found!r}")
        return data

    def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Strict JSON: a NaN or infinity here is a bug upstream and raises ``ValueError``."""
        write_json_atomic(self.checkpoint_path, {"format": RUN_FORMAT, **checkpoint}, strict=True)

    def append_history(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        line = dumps(record) + "\n"
        _write_point("before history line")
        with open(self.history_path, "a", encoding="utf-8") as handle:
            handle.write(line[: len(line) // 2])
            handle.flush()
            _write_point("half of history line")
            handle.write(line[len(line) // 2:])
            handle.flush()
            os.fsync(handle.fileno())
        _write_point("after history line")

    def read_history(self, up_to_step: int | None = None) -> list[dict[str, Any]]:
        """One record per step (the first line of each step), in order; cut lines are skipped."""
        if not self.history_path.exists():
            return []
        records = []
        seen: set[Any] = set()
        for line in self.history_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if not isinstance(record, dict):
                continue
            step = record.get("step", 0)
            if step in seen or (up_to_step is not None and isinstance(step, int) and step > up_to_step):
                continue
            seen.add(step)
            records.append(record)
        return records

    def truncate_history(self, up_to_step: int) -> list[dict[str, Any]]:
        """Keep only the steps the checkpoint covers, each once (a crash may have left one more)."""
        records = self.read_history(up_to_step)
        text = "".join(dumps(record) + "\n" for record in records)
        fd, temp = tempfile.mkstemp(dir=self.path, prefix=".history.jsonl.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.history_path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        return records

    def write_graph(self, step: int, graph_json: str) -> str:
        path = self.path / "graphs" / f"step-{step}.json"
        try:
            graph_json.encode("utf-8")
        except UnicodeEncodeError:
            graph_json = graph_json.encode("utf-8", "backslashreplace").decode("utf-8")
        write_json_atomic_text(path, graph_json)
        return str(path.relative_to(self.path))


