"""Convergence under a budget of workflow runs: the curve of each run, its summary, the table and the plot.

`bench.compare --budget-evals N --seeds K` wraps each target in a `CountingTarget`, which
records the score of every workflow run in order (each run counts one evaluation, whoever asked
for it: the loop's batch, its check, a rerun after a rollback). The curve of a row is the best
metric reached after 1, 2, ... N runs. Per optimizer and task (over seeds) the report gives the
best after 10, 25 and 50 runs, the runs needed to come within 5% of the task's reference optimum
(``info["references"]``, e.g. the traffic grid's best plan), LLM calls, tokens and wall time.
"""

from __future__ import annotations

import statistics
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

CHECKPOINTS = (10, 25, 50)
WITHIN = 0.05


class CountingTarget:
    """A target that behaves like the one it wraps and records the score of every run."""

    def __init__(self, target: Any, score: Callable[[Any, Any], float]) -> None:
        self._target = target
        self._score = score
        self.scores: list[float] = []
        self._lock = threading.Lock()

    def run(self, example: Any) -> Any:
        output, graph = self._target.run(example)
        value = self._score(example, output)
        with self._lock:
            self.scores.append(value)
        return output, graph

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def best_curve(metrics: Sequence[float], lower_is_better: bool) -> list[float]:
    """The best metric after each run."""
    out: list[float] = []
    for value in metrics:
        if not out:
            out.append(value)
        else:
            out.append(min(out[-1], value) if lower_is_better else max(out[-1], value))
    return out


def summarize(curve: Sequence[float], reference: float | None, lower_is_better: bool) -> dict[str, Any]:
    """Best after 10/25/50 runs, and the runs needed to come within 5% of ``reference``."""
    summary: dict[str, Any] = {f"best@{n}": (curve[min(n, len(curve)) - 1] if curve else None) for n in CHECKPOINTS}
    summary["evals_to_5pct"] = None
    if reference is not None:
        for index, value in enumerate(curve, 1):
            close = (
                value <= reference * (1 + WITHIN)
                if lower_is_better and reference >= 0
                else value >= reference * (1 - WITHIN)
                if not lower_is_better and reference >= 0
                else abs(value - reference) <= WITHIN * abs(reference)
            )
            if close:
                summary["evals_to_5pct"] = index
                break
    return summary


def _median(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (task, optimizer) over seeds: medians (runs that never got within 5% count as
    'not reached': the median is reported only when at least half the seeds reached it)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["optimizer"]), []).append(row)
    out = []
    for (task, optimizer), mine in groups.items():
        done = [r for r in mine if r.get("curve")]
        line: dict[str, Any] = {
            "task": task,
            "optimizer": optimizer,
            "seeds": len(mine),
            "ok": len(done),
            "status": ",".join(sorted({r["status"] for r in mine})),
        }
        for n in CHECKPOINTS:
            line[f"best@{n}"] = _median([r["convergence"][f"best@{n}"] for r in done])
        reached = [r["convergence"]["evals_to_5pct"] for r in done]
        hits = sorted(v for v in reached if v is not None)
        line["evals_to_5pct"] = (
            statistics.median(hits + [float("inf")] * (len(reached) - len(hits)))
            if hits and len(hits) * 2 >= len(reached)
            else None
        )
        line["reached"] = f"{len(hits)}/{len(reached)}"
        line["reference"] = _median([r.get("reference") for r in done])
        for key in ("calls", "tokens", "seconds"):
            line[key] = _median([r.get(key) for r in mine])
        line["evaluations"] = _median([len(r["curve"]) for r in done])
        out.append(line)
    return out


AGG_COLUMNS = [
    "task",
    "optimizer",
    "seeds",
    "ok",
    "best@10",
    "best@25",
    "best@50",
    "evals_to_5pct",
    "reached",
    "reference",
    "evaluations",
    "calls",
    "tokens",
    "seconds",
]


def format_aggregate(lines: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return "never" if value == float("inf") else f"{value:.2f}"
        return str(value)

    body = [[cell(line.get(c)) for c in AGG_COLUMNS] for line in lines]
    if markdown:
        return "\n".join(
            ["| " + " | ".join(AGG_COLUMNS) + " |", "|" + "---|" * len(AGG_COLUMNS)]
            + ["| " + " | ".join(cells) + " |" for cells in body]
        )
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(AGG_COLUMNS)]
    lines_out = ["  ".join(c.ljust(w) for c, w in zip(AGG_COLUMNS, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines_out + ["  ".join(x.ljust(w) for x, w in zip(cells, widths)) for cells in body])


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Best metric vs runs, one line per optimizer (mean over seeds), one panel per task, with the
    references as dashed lines. PNG with matplotlib; None without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    done = [r for r in rows if r.get("curve")]
    tasks = list(dict.fromkeys(r["task"] for r in done))
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        mine = [r for r in done if r["task"] == task]
        for optimizer in dict.fromkeys(r["optimizer"] for r in mine):
            curves = [r["curve"] for r in mine if r["optimizer"] == optimizer]
            length = max(len(c) for c in curves)
            padded = [c + [c[-1]] * (length - len(c)) for c in curves]
            mean = [sum(c[i] for c in padded) / len(padded) for i in range(length)]
            ax.plot(range(1, length + 1), mean, label=f"{optimizer} ({len(curves)} seeds)")
        refs = mine[0].get("references") or {}
        for key, style in (("grid_best_delay", "k--"), ("equal_split_delay", "k:"), ("actuated_delay", "k-.")):
            values = [r["references"][key] for r in mine if r.get("references") and key in r["references"]]
            if values and key in refs:
                ax.axhline(
                    sum(values) / len(values),
                    linestyle=style[1:],
                    color="k",
                    linewidth=0.8,
                    label=key.replace("_delay", "").replace("_", " ") + " (mean)",
                )
        ax.set_xlabel("workflow runs (evaluations)")
        ax.set_ylabel(f"best {mine[0]['metric']} so far" + (" (lower is better)" if mine[0]["lower_is_better"] else ""))
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
