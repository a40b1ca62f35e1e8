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

And the rules that make damage visible instead of silent:

- history lines are chained: each holds ``chain``, the SHA-256 of the previous line's ``chain`` and
  its own content, and the checkpoint holds the last one (``history_chain``); a line edited or
  deleted (in the middle or at the end) is detected on resume;
- every damaged file (not JSON, a directory where a file belongs, a checkpoint missing a field or
  holding a value of the wrong type, a broken chain) raises one error, `CorruptRun`, naming the file
  and the way out; a disk that is full or read-only raises `RunDirUnwritable`, and nothing already
  saved is lost (every write is atomic or an append that resume repairs);
- a start that failed before anything was saved (say, with 2 kB free) leaves nothing that makes the
  directory look foreign: a directory holding only our lock (and temporary files) is ours.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping

from opto_core.engine.records import RUN_FORMAT, Checkpoint, RecordFormatError, StepRecord
from opto_core.kernel.files import _write_point, dumps, write_json_atomic, write_json_atomic_text
from opto_core.kernel.redact import scrub

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second process
    fcntl = None

MARKER = ".opto-run"
LOCK = ".lock"
#: The files and folders a run of ours writes (the only ones `clear` removes).
OUR_FILES = ("config.json", "checkpoint.json", "history.jsonl", "graphs", "report.html", "STOP", LOCK, MARKER)
_TEMP = re.compile(
    r"^\.(checkpoint\.json|config\.json|history\.jsonl|report\.html|step-\d+\.json)\..*\.tmp$"
    r"|^history\.jsonl\.tmp$"
)

log = logging.getLogger("opto")


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (not a run of ours, a broken checkpoint...)."""


class CorruptRun(RunDirError, ValueError):
    """A damaged run file: not JSON, not in our format, a directory where a file belongs, an edited or
    deleted history line. The message names the file and the way out (a ValueError, as ``json`` raises)."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        run = self.path.parent if self.path.parent.name != "graphs" else self.path.parent.parent
        super().__init__(
            f"{self.path}: {problem}. The run in {run} cannot be resumed from it: restore the file "
            f"(from a backup or a copy of the run directory), or start over in a new run directory "
            f"(optimize(..., run_dir=NEW), opto demo --run-dir NEW)"
        )


class RunDirUnwritable(RunDirError):
    """The run directory cannot be written (the disk is full, read-only, or access is denied).

    Nothing already saved is lost: the directory holds every step finished before the failed write."""

    def __init__(self, path: str | os.PathLike[str], cause: OSError) -> None:
        self.path = Path(path)
        self.errno = cause.errno
        why = {
            errno.ENOSPC: "the disk is full",
            errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EPERM: "the operation is not permitted",
        }.get(cause.errno or 0, cause.strerror or str(cause))
        super().__init__(
            f"cannot write {self.path}: {why}. Nothing saved was lost: every step finished before "
            f"this write is in the run directory. Free space or fix the permissions, then resume "
            f"(opto resume DIR, or optimize(..., run_dir=DIR) again)"
        )


class RunLocked(RunDirError):
    """Another process holds this run directory (it is running or resuming the same run)."""


class NotARun(RunDirError):
    """A directory that exists but holds no run of ours: it is never deleted or overwritten."""


#: errno values that mean "this disk cannot take the write" (as opposed to a damaged file).
_UNWRITABLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
#: Fields a checkpoint must hold, with their JSON types.
_CHECKPOINT_FIELDS: dict[str, tuple[type, ...]] = {"step": (int,), "current": (dict,), "best": (dict,)}
_OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
    "best_score": (int, float, type(None)),
    "current_score": (int, float, type(None)),
    "initial_score": (int, float, type(None)),
    "optimizer": (dict,),
    "usage": (dict,),
    "errors": (int,),
    "evaluations": (int,),
    "done": (bool,),
    "status": (str,),
    "history_chain": (str,),
}


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn the ways a write fails into our two errors: a disk that cannot take it, a damaged layout."""
    try:
        yield
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        raise CorruptRun(
            path, f"cannot be written ({type(exc).__name__}: a directory or file is in the way: {exc.filename or path})"
        ) from None
    except OSError as exc:
        if exc.errno in _UNWRITABLE:
            raise RunDirUnwritable(path, exc) from None
        raise


def _chain(previous: str, record: dict[str, Any]) -> str:
    """The history chain after ``record``: SHA-256 of the previous link and the record's canonical JSON."""
    body = json.dumps(
        {k: v for k, v in record.items() if k != "chain"}, sort_keys=True, ensure_ascii=True, default=repr
    )
    return hashlib.sha256((previous + "\n" + body).encode("utf-8")).hexdigest()


class RunDir:
    """Reads and writes one run directory. ``open``/``close`` bracket a run (lock, repair, checks)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: Any = None
        self._chain = ""  # the last history line's chain link ("" before the first line)

    # ----- what a directory is ----------------------------------------------------------------------
    @staticmethod
    def is_run(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a run of ours: the marker, a checkpoint in our format (runs from
        before the marker), or only what an interrupted start of ours leaves (our lock, temp files)."""
        path = Path(path)
        if (path / MARKER).is_file():
            return True
        if RunDir._only_leftovers(path):
            return True
        try:
            data = json.loads((path / "checkpoint.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("format") == RUN_FORMAT

    @staticmethod
    def _only_leftovers(path: Path) -> bool:
        """A non-empty directory holding nothing but our lock and our temporary files."""
        try:
            names = [entry.name for entry in path.iterdir()]
        except OSError:
            return False
        return bool(names) and all(name == LOCK or _TEMP.match(name) for name in names)

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
            raise NotARun(
                f"{path} exists and holds no opto run (no {MARKER} marker): it is never deleted. "
                f"Choose another --run-dir, or remove it yourself if you are sure"
            )
        store = RunDir(path)
        store._acquire()  # never delete under a running process
        try:
            shutil.rmtree(path)
        finally:
            store.close()
        return True

    # ----- opening and closing a run ------------------------------------------------------------------
    def open(self, resume: bool = True) -> Checkpoint | None:
        """Lock the directory, repair it after any crash, check it, and return the checkpoint to resume from.

        ``resume=False`` starts over: our files are cleared (only ours) and None is returned.
        Raises `RunLocked` if another process holds the run, `NotARun` if the directory holds
        files named like ours that are not a run of ours, `CorruptRun` for a damaged file, and
        `RunDirUnwritable` when the disk cannot take the first writes (then nothing is left behind
        that would make the directory look foreign).
        """
        if self.path.exists() and not self.path.is_dir():
            raise NotARun(f"{self.path} is a file, not a run directory; choose another run directory")
        if self.path.exists() and not self.is_run(self.path):
            clash = [name for name in OUR_FILES if (self.path / name).exists() and name not in (LOCK, MARKER)]
            if clash:
                raise NotARun(
                    f"{self.path} holds {', '.join(clash)} but no opto run (no {MARKER} marker); "
                    f"refusing to overwrite them. Choose another run directory"
                )
        created = not self.path.exists()
        try:
            with _writing(self.path):
                self.path.mkdir(parents=True, exist_ok=True)
            self._write_marker()  # before the lock: a directory we touched always says it is ours
            self._acquire()
        except BaseException:
            self.close()
            if created:
                self._undo_start()
            raise
        try:
            self._remove_temp_files()
            checkpoint = self.read_checkpoint() if resume else None
            if checkpoint is None:
                self._clear_progress(config=not resume)
                self._chain = ""
            else:
                self.truncate_history(checkpoint.step, expect_chain=checkpoint.get("history_chain"))
            return checkpoint
        except BaseException:
            self.close()
            raise

    def _write_marker(self) -> None:
        marker = self.path / MARKER
        if marker.is_file():
            return
        with _writing(marker):
            _write_point("before marker")
            marker.write_text(json.dumps({"format": RUN_FORMAT}) + "\n", encoding="utf-8")

    def _undo_start(self) -> None:
        """Remove what a failed first start created (our marker, lock and the empty directory)."""
        for name in (MARKER, LOCK):
            try:
                (self.path / name).unlink()
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError:
            pass

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
        with _writing(self.path / LOCK):
            handle = open(self.path / LOCK, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise RunLocked(
                    f"{self.path} is in use by {holder}: one run directory, one process at a time. "
                    f"Wait for it to finish, or stop it (create {self.path / 'STOP'})"
                ) from None
        try:
            with _writing(self.path / LOCK):
                handle.seek(0)
                handle.truncate()
                handle.write(f"process {os.getpid()}\n")
                handle.flush()
        except RunDirError:
            with contextlib.suppress(OSError):  # closing flushes again, and a full disk refuses it again
                handle.close()
            raise
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
            path = self.path / name
            if path.is_dir():
                raise CorruptRun(path, "is a directory, where the run keeps a file")
            if path.exists():
                path.unlink()
        if (self.path / "graphs").is_dir():
            shutil.rmtree(self.path / "graphs")
        elif (self.path / "graphs").exists():
            raise CorruptRun(self.path / "graphs", "is a file, where the run keeps its graphs folder")

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

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except IsADirectoryError:
            raise CorruptRun(path, "is a directory, where the run keeps a file") from None
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested past any sense
            raise CorruptRun(path, f"is not valid JSON ({str(exc)[:200]})") from None
        except PermissionError as exc:
            raise CorruptRun(path, f"cannot be read ({exc.strerror})") from None

    def write_config(self, config: dict[str, Any]) -> None:
        path = self.path / "config.json"
        with _writing(path):
            write_json_atomic(path, scrub(config))

    def read_config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not path.exists():
            return {}
        data = self._read_json(path)
        if not isinstance(data, dict):
            raise CorruptRun(path, f"must hold a JSON object, holds a JSON {type(data).__name__}")
        return data

    def read_checkpoint(self) -> Checkpoint | None:
        """The checkpoint, checked: our format, every field the loop needs, each of its type."""
        path = self.checkpoint_path
        if not path.exists():
            return None
        data = self._read_json(path)
        if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise CorruptRun(path, f"unsupported run format {found!r} (expected {RUN_FORMAT!r})")
        for name in _CHECKPOINT_FIELDS:
            if name not in data:
                raise CorruptRun(path, f"has no {name!r} field")
        for name, types in {**_CHECKPOINT_FIELDS, **_OPTIONAL_FIELDS}.items():
            if name in data and (
                not isinstance(data[name], types) or isinstance(data[name], bool) and bool not in types
            ):
                raise CorruptRun(
                    path,
                    f"the field {name!r} holds {type(data[name]).__name__} "
                    f"{str(data[name])[:60]!r}, not {' or '.join(t.__name__ for t in types)}",
                )
        if data["step"] < 0:
            raise CorruptRun(path, f"the step {data['step']} is negative")
        try:
            return Checkpoint.from_dict(data)
        except RecordFormatError as exc:
            raise CorruptRun(path, str(exc)) from None

    def write_checkpoint(self, checkpoint: Checkpoint | Mapping[str, Any]) -> None:
        """Strict JSON: a NaN or infinity here is a bug upstream and raises ``ValueError``. The last
        history line's chain link goes with it, so a history cut after it is detected."""
        data = checkpoint.to_dict() if isinstance(checkpoint, Checkpoint) else dict(checkpoint)
        with _writing(self.checkpoint_path):
            write_json_atomic(
                self.checkpoint_path, {**data, "format": RUN_FORMAT, "history_chain": self._chain}, strict=True
            )

    def append_history(self, record: StepRecord | Mapping[str, Any]) -> None:
        """Append one step's record (with its chain link), fsynced."""
        data = record.to_dict() if isinstance(record, StepRecord) else dict(record)
        written = json.loads(dumps(data))  # the record as the file will hold it (JSON types, secrets redacted)
        link = _chain(self._chain, written)
        line = dumps({**written, "chain": link}) + "\n"
        with _writing(self.history_path):
            self.path.mkdir(parents=True, exist_ok=True)
            _write_point("before history line")
            with open(self.history_path, "a", encoding="utf-8") as handle:
                handle.write(line[: len(line) // 2])
                handle.flush()
                _write_point("half of history line")
                handle.write(line[len(line) // 2 :])
                handle.flush()
                os.fsync(handle.fileno())
            self._chain = link
            _write_point("after history line")

    def read_history(self, up_to_step: int | None = None) -> list[StepRecord]:
        """One record per step (the first line of each step), in order, without their chain links; cut
        lines are skipped. (Resuming checks the chain: `truncate_history`.) Raises `CorruptRun` for a
        record in a format this version cannot read."""
        return [record for record, _, _ in self._history_lines(up_to_step)]

    def _history_lines(self, up_to_step: int | None = None) -> list[tuple[StepRecord, dict[str, Any], str]]:
        """``(record, the line's JSON, the line as written)`` per step, first line of each step, cut lines skipped."""
        path = self.history_path
        if not path.exists():
            return []
        if path.is_dir():
            raise CorruptRun(path, "is a directory, where the run keeps a file")
        records = []
        seen: set[int] = set()
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a line cut by a crash
            if not isinstance(data, dict):
                continue
            try:
                record = StepRecord.from_dict({k: v for k, v in data.items() if k != "chain"})
            except RecordFormatError as exc:
                raise CorruptRun(path, str(exc)) from None
            if record.step in seen or (up_to_step is not None and record.step > up_to_step):
                continue
            seen.add(record.step)
            records.append((record, data, line))
        return records

    def truncate_history(self, up_to_step: int, expect_chain: str | None = None) -> list[StepRecord]:
        """Keep only the steps the checkpoint covers, each once (a crash may have left one more), after
        checking them: steps 0 to ``up_to_step`` in order, each line's chain link, and the last link
        against the checkpoint's (``expect_chain``). Returns the records."""
        lines = self._history_lines(up_to_step)
        self._check_history([data for _, data, _ in lines], up_to_step, expect_chain)
        if any("chain" in data for _, data, _ in lines):
            text = "".join(line + "\n" for _, _, line in lines)  # the kept lines exactly as written
        else:  # a run written before the history was chained (or before records had a format): upgraded and chained
            text = ""
            for record, _, _ in lines:
                written = json.loads(dumps(record.to_dict()))
                self._chain = _chain(self._chain, written)
                text += dumps({**written, "chain": self._chain}) + "\n"
        with _writing(self.history_path):
            fd, temp = tempfile.mkstemp(dir=self.path, prefix=".history.jsonl.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, self.history_path)
            except BaseException:
                if os.path.exists(temp):
                    os.unlink(temp)
                raise
        return [record for record, _, _ in lines]

    def _check_history(self, lines: list[dict[str, Any]], up_to_step: int, expect_chain: str | None) -> None:
        steps = [record.get("step") for record in lines]
        if steps != list(range(len(steps))) or len(steps) != up_to_step + 1:
            missing = sorted(set(range(up_to_step + 1)) - {s for s in steps if isinstance(s, int)})
            what = f"the lines of steps {missing[:10]} are missing" if missing else f"its steps run {steps[:20]}"
            raise CorruptRun(
                self.history_path, f"{what}, but the checkpoint is at step {up_to_step} (a line was deleted or edited)"
            )
        link = ""
        chained = any("chain" in record for record in lines)
        if not chained and expect_chain:  # only a checkpoint written after the chain existed holds a link
            raise CorruptRun(
                self.history_path,
                "its lines hold no chain links, but the checkpoint holds the last one: the lines were rewritten",
            )
        for record in lines:
            if not chained:  # a run written before the history was chained: nothing to check against
                break
            expected = _chain(link, record)
            if record.get("chain") != expected:
                raise CorruptRun(
                    self.history_path,
                    f"the line of step {record.get('step')} was edited, or a line "
                    f"before it was deleted (its chain link does not match)",
                )
            link = expected
        # A checkpoint without a link predates the chain: the history of an old run is chained when it
        # resumes, before the next checkpoint is written, and a stop in between must not refuse the run forever.
        if chained and expect_chain and expect_chain != link:
            raise CorruptRun(
                self.history_path,
                f"its last line does not match the checkpoint (step {up_to_step}): a line was edited or deleted",
            )
        self._chain = link

    def write_graph(self, step: int, graph_json: str) -> str:
        path = self.path / "graphs" / f"step-{step}.json"
        try:
            graph_json.encode("utf-8")
        except UnicodeEncodeError:
            graph_json = graph_json.encode("utf-8", "backslashreplace").decode("utf-8")
        with _writing(path):
            write_json_atomic_text(path, graph_json)
        return str(path.relative_to(self.path))
