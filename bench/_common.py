"""Shared helpers for the bench scripts: the common command line and the two output forms.

Every ``bench/*.py`` accepts ``--quick`` (finishes in under a minute here) and ``--json`` (one JSON
object per result row on stdout, nothing else there). Without ``--json`` the rows are printed as
aligned tables, ready to paste into ``docs/benchmarks.md``. Progress goes to stderr in both forms,
so ``--json`` output stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence


def make_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the two flags every bench script has."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes only (under a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per result row")
    return parser


def progress(message: str) -> None:
    """A progress line on stderr (keeps stdout clean for --json)."""
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """Where the figures were taken: CPU model, logical CPUs, Python version, date."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average": load,
    }


# ----- formatting -------------------------------------------------------------------------------
def fmt_s(seconds: float | None) -> str:
    """Seconds, with precision matched to the size (ms below one second)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.1f} MB"


def fmt_num(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Callable[[Any], str] | None]]) -> str:
    """A Markdown table: ``columns`` are (key, header, formatter); missing keys print as ``-``."""
    header = [title for _, title, _ in columns]
    body = []
    for row in rows:
        cells = []
        for key, _, formatter in columns:
            value = row.get(key)
            if value is None:
                cells.append("-")
            elif formatter is not None:
                cells.append(formatter(value))
            else:
                cells.append(str(value))
        body.append(cells)
    widths = [max(len(header[i]), *(len(r[i]) for r in body)) if body else len(header[i]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |" for cells in body]
    return "\n".join(lines)


def emit_json(rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per row on stdout."""
    for row in rows:
        print(json.dumps(row, default=str, ensure_ascii=False), flush=True)


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (wall seconds)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
