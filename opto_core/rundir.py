"""The run directory: checkpoints, history and graphs of one optimization run, crash-safe.

Layout (documented in docs/run-dir.md):

    run_dir/
      config.json        settings of the run (never an API key)
      checkpoint.json    after every finished step: current and best values, optimizer memory, counters
      history.jsonl      one JSON line per finished step (values, scores, proposal, reasoning, usage)
      graphs/step-K.json the graph of one traced run of step K (for the report)
      STOP               create this file to stop the run gracefully after the current step
      report.html        written by `opto report` (and at the end of a run)

Every JSON file is written to a temporary file and renamed, so a crash never leaves half a
file. ``history.jsonl`` may hold a line for a step whose checkpoint was not written yet; such
lines are dropped when the run resumes, so history and checkpoint always agree.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

RUN_FORMAT = "opto-run/1"
_SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|secret|password|token$)", re.IGNORECASE)


def scrub(value: Any) -> Any:
    """Drop anything that looks like a secret from settings before they are written."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET_KEYS.search(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=1, default=repr)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

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
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def read_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        data = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
        if data.get("format") != RUN_FORMAT:
            raise ValueError(f"{self.checkpoint_path}: unsupported run format {data.get('format')!r}")
        return data

    def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        write_json_atomic(self.checkpoint_path, {"format": RUN_FORMAT, **checkpoint})

    def append_history(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, default=repr)
        with open(self.history_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_history(self, up_to_step: int | None = None) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        records = []
        for line in self.history_path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if up_to_step is None or record.get("step", 0) <= up_to_step:
                records.append(record)
        return records

    def truncate_history(self, up_to_step: int) -> list[dict[str, Any]]:
        """Keep only the steps the checkpoint covers (a crash may have left one more)."""
        records = self.read_history(up_to_step)
        tmp = self.history_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False, default=repr) + "\n")
        os.replace(tmp, self.history_path)
        return records

    def write_graph(self, step: int, graph_json: str) -> str:
        path = self.path / "graphs" / f"step-{step}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(graph_json, encoding="utf-8")
        return str(path.relative_to(self.path))
