"""The HTML report of a run directory, and drawings of single graph files.

``write_report(run_dir)`` reads ``config.json``, ``checkpoint.json``, ``history.jsonl`` and the
latest ``graphs/step-K.json`` (layout in `opto_core.engine.rundir`) and writes one self-contained page:
inline CSS and SVG, no script, nothing fetched when it is opened, so it can be mailed or opened
offline. It works on partial runs (history without a checkpoint, a crash mid-step, a run still
going) and says what is missing. Everything shown comes from LLMs or users, so every piece of
text is escaped.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from opto_core.app import drawing
from opto_core.engine.coverage import Coverage
from opto_core.engine.outcome import STOP_REASONS, outcome_of
from opto_core.engine.records import INITIAL, STEP, Checkpoint, StepRecord, finite_number
from opto_core.engine.rundir import RunDir
from opto_core.kernel.files import write_text_atomic
from opto_core.kernel.graph import Graph, GraphError
from opto_core.kernel.text import as_text
from opto_core.llm.usage import Usage
from opto_core.optimizers.protocol import Proposal

_STOP_REASONS = STOP_REASONS


class ReportError(ValueError):
    """The path holds no run (or no readable graph): nothing to report."""


def e(value: Any) -> str:
    """Escape anything for HTML text and attributes."""
    return html.escape(str(value), quote=True)


# ----- reading a run directory ------------------------------------------------------------------------
@dataclass
class RunData:
    """Everything the report shows, read leniently from a run directory."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    history: list[StepRecord] = field(default_factory=list)
    graph: Graph | None = None
    graph_file: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[StepRecord]:
        return [r for r in self.history if r.kind == STEP]

    @property
    def initial(self) -> StepRecord | None:
        return next((r for r in self.history if r.kind == INITIAL), None)

    @property
    def checkpoint_step(self) -> int | None:
        return None if self.checkpoint is None else self.checkpoint.step


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a run directory; raise `ReportError` when it holds no run at all."""
    path = Path(run_dir)
    if not path.exists():
        raise ReportError(
            f"{path} does not exist: give the run directory passed to optimize(run_dir=...) or `opto demo --run-dir`"
        )
    if not path.is_dir():
        raise ReportError(
            f"{path} is not a directory: give a run directory (it holds config.json, checkpoint.json and history.jsonl)"
        )
    store = RunDir(path)
    names = ("config.json", "checkpoint.json", "history.jsonl")
    if not any((path / name).exists() for name in names):
        raise ReportError(f"{path} holds no optimization run: none of {', '.join(names)} is there")
    data = RunData(path)
    try:
        config = store.read_config()
        data.config = config if isinstance(config, dict) else {}
    except (OSError, ValueError) as exc:
        data.warnings.append(f"config.json could not be read ({exc}); settings are not shown.")
    try:
        data.checkpoint = store.read_checkpoint()
    except (OSError, ValueError) as exc:
        data.warnings.append(f"checkpoint.json could not be read ({exc}); the report uses history.jsonl only.")
    try:
        data.history = store.read_history()
    except (OSError, ValueError) as exc:
        data.warnings.append(f"history.jsonl could not be read ({exc}).")
    data.history.sort(key=lambda r: r.step)
    for record in data.history:
        if record.problems:
            data.warnings.append(f"history.jsonl, step {record.step}: " + "; ".join(record.problems))
    if data.checkpoint is None:
        if data.history:
            data.warnings.append(
                "No checkpoint yet: the run crashed, or is still running, before its first "
                "checkpoint. The steps below come from history.jsonl."
            )
        else:
            data.warnings.append("No step has finished yet: only the settings were written.")
    else:
        done = data.checkpoint_step
        extra = [r.step for r in data.history if done is not None and r.step > done]
        if extra:
            data.warnings.append(
                f"history.jsonl holds step(s) {', '.join(map(str, extra))} after the last "
                f"checkpoint (step {done}): the run stopped while saving them; a resumed run "
                f"redoes them."
            )
    data.graph_file = _latest_graph(path)
    if data.graph_file is not None:
        try:
            data.graph = Graph.from_json(data.graph_file.read_text(encoding="utf-8"))
        except (OSError, GraphError, ValueError) as exc:
            data.warnings.append(f"{data.graph_file.name} could not be drawn: {exc}")
    return data


def _latest_graph(path: Path) -> Path | None:
    found = []
    for file in (path / "graphs").glob("step-*.json"):
        match = re.fullmatch(r"step-(\d+)\.json", file.name)
        if match:
            found.append((int(match.group(1)), file))
    return max(found)[1] if found else None


def _fmt(value: Any, digits: int = 4) -> str:
    number = finite_number(value)
    return "–" if number is None else f"{number:.{digits}g}"


# ----- values and diffs ---------------------------------------------------------------------------------
def value_text(value: Any) -> str:
    """A value as it reads best: strings as they are, everything else as indented JSON."""
    return as_text(value, indent=2)


def value_html(value: Any, missing: bool = False) -> str:
    if missing:
        return '<span class="muted">(unknown)</span>'
    text = value_text(value)
    lines = text.count("\n") + 1
    block = f'<pre class="value">{e(text)}</pre>'
    if lines > 30 or len(text) > 3000:
        return f"<details><summary>{lines} lines, {len(text)} characters</summary>{block}</details>"
    return block


def diff_html(before: Any, after: Any, names: tuple[str, str] = ("initial", "best")) -> str:
    """A line diff (unified, 3 lines of context) of two values; short scalars as 'a → b'."""
    if before == after:
        return '<p class="muted">unchanged</p>'
    if not isinstance(before, str) and not isinstance(after, str):
        a, b = value_text(before), value_text(after)
        if "\n" not in a and "\n" not in b:
            return f'<p class="change"><code>{e(a)}</code> → <code>{e(b)}</code></p>'
    a_lines, b_lines = value_text(before).splitlines(), value_text(after).splitlines()
    lines = list(difflib.unified_diff(a_lines, b_lines, names[0], names[1], lineterm="", n=3))
    if not lines:  # only line endings or a final newline changed
        return '<p class="muted">only whitespace at line ends changed</p>'
    rows = []
    for line in lines:
        if line.startswith(("+++", "---")):
            css = "hdr"
        elif line.startswith("@@"):
            css = "hunk"
        elif line.startswith("+"):
            css = "add"
        elif line.startswith("-"):
            css = "del"
        else:
            css = "ctx"
        rows.append(f'<span class="{css}">{e(line) or " "}</span>')
    return '<pre class="diff">' + "".join(rows) + "</pre>"  # the spans are blocks: no newlines between


# ----- the score plot -------------------------------------------------------------------------------------
def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks: list[float] = []
    value = first
    while value <= high + step * 1e-6 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def score_plot(history: Sequence[StepRecord]) -> str:
    """Batch score, evaluation score and best score per step as an inline SVG line plot;
    rolled-back steps are marked with a red cross at the score that was rejected."""
    records = [r for r in history if r.kind in (INITIAL, STEP)]
    series = {
        "batch": [(r.step, r.batch_score) for r in records],
        "eval": [(r.step, r.eval_score) for r in records],
        "best": [(r.step, r.best_score) for r in records],
    }
    values = [v for points in series.values() for _, v in points if v is not None]
    if not records or not values:
        return '<p class="muted">No scores recorded yet.</p>'
    steps = [r.step for r in records]
    x_lo: float = min(steps)
    x_hi: float = max(steps)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    y_lo, y_hi = min(values), max(values)
    if y_hi == y_lo:
        pad = abs(y_hi) * 0.1 or 0.5
        y_lo, y_hi = y_lo - pad, y_hi + pad
    pad = (y_hi - y_lo) * 0.08
    y_lo, y_hi = y_lo - pad, y_hi + pad
    width, height, left, right, top, bottom = 780, 290, 58, 170, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(step: int) -> float:
        return left + (step - x_lo) / (x_hi - x_lo) * plot_w

    def py(value: float) -> float:
        return top + (y_hi - value) / (y_hi - y_lo) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="score-plot" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="score per step" '
        f'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="11">'
    ]
    for record in records:  # rolled-back steps: a light red band behind everything
        if _outcome(record)[0] == "rolled back":
            x = px(record.step)
            band = max(min(plot_w / max(len(records), 1) * 0.6, 24), 4)
            x0, x1 = max(x - band / 2, left), min(x + band / 2, left + plot_w)
            out.append(
                f'<rect class="rollback-band" x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" '
                f'height="{plot_h}" fill="#ffebee"/>'
            )
    for tick in _ticks(y_lo, y_hi):
        y = py(tick)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#57606a">{e(f"{tick:g}")}</text>'
        )
    step_ticks = sorted(set(steps))
    stride = max(1, math.ceil(len(step_ticks) / 20))
    for tick_step in step_ticks[::stride]:
        x = px(tick_step)
        out.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#8c959f"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#57606a">{tick_step}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#8c959f"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="#24292f">step</text>'
        f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="#24292f" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">score</text>'
    )
    look = {
        "batch": ("#8c959f", "4 3", "batch score (before the step)"),
        "eval": ("#0969da", "", "score after (the proposal applied)"),
        "best": ("#1a7f37", "", "best score"),
    }
    for name, points in series.items():
        colour, dash, _ = look[name]
        run: list[str] = []
        segments = []
        for step, value in points:
            if value is None:
                if len(run) > 1:
                    segments.append(run)
                run = []
                continue
            run.append(f"{px(step):.1f},{py(value):.1f}")
        if len(run) > 1:
            segments.append(run)
        for segment in segments:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(
                f'<polyline class="line {name}" points="{" ".join(segment)}" fill="none" '
                f'stroke="{colour}" stroke-width="{2.2 if name == "best" else 1.6}"{dash_attr}/>'
            )
    for record, (_, batch), (_, evaluated), (_, best) in zip(records, series["batch"], series["eval"], series["best"]):
        step = record.step
        outcome = _outcome(record)[0]
        x = px(step)
        if batch is not None:
            out.append(
                f'<circle class="pt batch" data-step="{e(step)}" cx="{x:.1f}" cy="{py(batch):.1f}" r="3" '
                f'fill="#ffffff" stroke="#8c959f"><title>step {e(step)}: batch score {_fmt(batch)}</title>'
                f'</circle>'
            )
        if evaluated is not None:
            y = py(evaluated)
            if outcome == "rolled back":
                out.append(
                    f'<path class="rollback" data-step="{e(step)}" d="M{x - 5:.1f},{y - 5:.1f} '
                    f'L{x + 5:.1f},{y + 5:.1f} M{x - 5:.1f},{y + 5:.1f} L{x + 5:.1f},{y - 5:.1f}" '
                    f'stroke="#cf222e" stroke-width="2.4"><title>step {e(step)}: score {_fmt(evaluated)} '
                    f'after the proposal: worse, rolled back</title></path>'
                )
            else:
                out.append(
                    f'<circle class="pt eval" data-step="{e(step)}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" '
                    f'fill="#0969da"><title>step {e(step)}: score {_fmt(evaluated)} ({e(outcome)})</title>'
                    f'</circle>'
                )
        if best is not None:
            out.append(
                f'<circle class="pt best" data-step="{e(step)}" cx="{x:.1f}" cy="{py(best):.1f}" r="3" '
                f'fill="#1a7f37"><title>step {e(step)}: best {_fmt(best)}</title></circle>'
            )
    legend_x = left + plot_w + 14
    for row, (colour, dash, label) in enumerate(look.values()):
        y = top + 10 + row * 34
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        words = label.split(" (")
        out.append(
            f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 20}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2"{dash_attr}/><text x="{legend_x + 26}" y="{y + 4}">{e(words[0])}</text>'
        )
        if len(words) > 1:
            out.append(f'<text x="{legend_x + 26}" y="{y + 17}" fill="#57606a">({e(words[1])}</text>')
    y = top + 10 + 3 * 34
    out.append(
        f'<path d="M{legend_x + 5},{y - 5} L{legend_x + 15},{y + 5} M{legend_x + 5},{y + 5} '
        f'L{legend_x + 15},{y - 5}" stroke="#cf222e" stroke-width="2.4"/>'
        f'<text x="{legend_x + 26}" y="{y + 4}">rolled back</text>'
    )
    out.append("</svg>")
    return "".join(out)


# ----- steps ---------------------------------------------------------------------------------------------------
def _outcome(record: StepRecord) -> tuple[str, str]:
    """(short outcome, css class) of one history record."""
    if record.kind == INITIAL:
        return "initial", "initial"
    if record.kept:
        return "kept", "kept"
    if record.apply_error:
        return "apply failed", "bad"
    if record.eval_score is not None:
        return "rolled back", "bad"
    if record.proposal is not None and record.proposal.error:
        return "no proposal", "bad"
    return "no change", "none"


def _step_usage(record: StepRecord, previous: StepRecord | None) -> Usage:
    """The optimizer's LLM use in one step: the change of the run totals, else the proposal's own."""
    total, before = record.usage, previous.usage if previous is not None else None
    if total is not None and before is not None:
        return Usage(
            total.calls - before.calls,
            total.prompt_tokens - before.prompt_tokens,
            total.completion_tokens - before.completion_tokens,
            total.cost_usd - before.cost_usd,
        )
    proposal_usage = (record.proposal or Proposal()).usage
    return Usage.from_dict(proposal_usage) if proposal_usage else Usage()


def _usage_text(usage: Usage) -> str:
    calls, prompt, completion = usage.calls, usage.prompt_tokens, usage.completion_tokens
    return (
        f"{calls} LLM call{'s' if calls != 1 else ''}, {prompt + completion:,} tokens "
        f"({prompt:,} prompt + {completion:,} completion), ${usage.cost_usd:.4f}"
    )


def _step_section(record: StepRecord, previous: StepRecord | None, data: RunData) -> str:
    step = record.step
    outcome, css = _outcome(record)
    proposal = record.proposal or Proposal()
    before = record.values_before or {}
    parts = [
        f'<section class="step" id="step-{e(step)}"><h3>Step {e(step)} <span class="badge {css}">'
        f'{e(outcome)}</span></h3>'
    ]
    done = data.checkpoint_step
    if done is not None and step > done:
        parts.append(
            '<p class="warn">This step is in history.jsonl but not in the checkpoint: the run stopped '
            'while saving it.</p>'
        )
    facts = []
    if record.batch is not None:
        facts.append(f"batch examples {e(_short_list(record.batch))}")
    facts.append(f"batch score {e(_fmt(record.batch_score))}")
    facts.append(f"score after the proposal {e(_fmt(record.eval_score))}")
    facts.append(f"best so far {e(_fmt(record.best_score))}")
    if record.seconds is not None:
        facts.append(f"{record.seconds:.1f} s")
    parts.append(f'<p class="facts">{" · ".join(facts)}</p>')
    verdict = _verdict(record, previous, data, outcome)
    if verdict:
        parts.append(f'<p class="verdict {css}">{e(verdict)}</p>')
    parts.append(
        f'<p class="facts">Optimizer: {e(_usage_text(_step_usage(record, previous)))}'
        + (f"; {e(proposal.attempts)} attempt(s)" if proposal.attempts else "")
        + (" · the optimizer answered TERMINATE" if proposal.terminated else "")
        + "</p>"
    )
    for problem, label in ((proposal.error, "Error"), (record.apply_error, "The adapter refused the values")):
        if problem:
            parts.append(f'<p class="warn">{label}: {e(problem)}</p>')
    if record.skipped_examples:
        parts.append(
            '<p class="warn">Examples not traced back to a parameter: '
            + "; ".join(e(s) for s in record.skipped_examples)
            + "</p>"
        )
    if proposal.reasoning:
        parts.append(f'<h4>Reasoning</h4><pre class="reasoning">{e(proposal.reasoning)}</pre>')
    if proposal.accepted:
        parts.append("<h4>Proposed values (valid)</h4>")
        for name, value in proposal.accepted.items():
            old = before.get(name)
            parts.append(
                f'<div class="param-change"><div class="pname">{e(name)}</div>'
                f'{diff_html(old, value, ("before", "proposed")) if name in before else value_html(value)}'
                f"</div>"
            )
    if proposal.rejected:
        rows = "".join(
            f"<tr><td>{e(name)}</td><td><pre class='reason'>{e(reason)}</pre></td></tr>"
            for name, reason in proposal.rejected.items()
        )
        parts.append(
            f'<h4>Rejected values</h4><table class="grid"><tr><th>parameter</th><th>reason</th></tr>{rows}</table>'
        )
    feedback = record.feedback or []
    if feedback:
        batch = record.batch or []
        feedback_rows = []
        for i, item in enumerate(feedback):
            item = item if isinstance(item, dict) else {"text": item}
            example = batch[i] if i < len(batch) else i
            feedback_rows.append(
                f"<tr><td>{e(example)}</td><td>{e(_fmt(item.get('score')))}</td>"
                f"<td><pre class='reason'>{e(item.get('text', ''))}</pre></td></tr>"
            )
        parts.append(
            f"<details><summary>Feedback on the batch ({len(feedback)} examples)</summary>"
            f'<table class="grid"><tr><th>example</th><th>score</th><th>feedback</th></tr>'
            f'{"".join(feedback_rows)}'
            f"</table></details>"
        )
    if record.graph:
        parts.append(f'<p class="muted">Trace of one run of this step: <code>{e(record.graph)}</code></p>')
    parts.append("</section>")
    return "".join(parts)


def _verdict(record: StepRecord, previous: StepRecord | None, data: RunData, outcome: str) -> str:
    """One sentence saying why the step was kept or rolled back (the loop's rule, with its numbers)."""
    after = record.eval_score
    if after is None or outcome not in ("kept", "rolled back"):
        return ""
    before: float | None
    if data.config.get("valset_size"):  # the score of the values in place before this step
        before = (
            None if previous is None else (previous.current_score if previous.kind == STEP else previous.eval_score)
        )
        where = "on the validation set"
    else:
        before = record.batch_score
        where = "on this step's batch"
    if before is None:
        return ""
    if outcome == "kept":
        return f"Kept: the score {where} went from {_fmt(before)} to {_fmt(after)}."
    return f"Rolled back: the score {where} dropped from {_fmt(before)} to {_fmt(after)}."


def _short_list(value: Any, limit: int = 20) -> str:
    if isinstance(value, list):
        shown = ", ".join(str(v) for v in value[:limit])
        return f"[{shown}{', …' if len(value) > limit else ''}]"
    return str(value)


# ----- the page -------------------------------------------------------------------------------------------------
REPORT_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;line-height:1.45;background:#fff}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:30px 0 10px;border-bottom:1px solid #d8dee4;padding-bottom:4px}
h3{font-size:16px;margin:0 0 6px} h4{font-size:13px;margin:12px 0 4px;color:#424a53;text-transform:uppercase;letter-spacing:.03em}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{white-space:pre-wrap;word-break:break-word;margin:0}
.muted{color:#6e7781} p.muted{font-size:13px} .sub{color:#57606a;margin:0 0 12px}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:4px;padding:6px 10px;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;min-width:130px}
.card .k{font-size:12px;color:#57606a} .card .v{font-size:20px;font-weight:600}
table.grid{border-collapse:collapse;font-size:13px;width:100%}
table.grid th,table.grid td{border:1px solid #d8dee4;padding:4px 8px;vertical-align:top;text-align:left}
table.grid th{background:#f6f8fa;font-weight:600}
table.run th{width:220px}
table.grid td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre.value{background:#f6f8fa;border:1px solid #d8dee4;border-radius:4px;padding:6px 8px;max-height:420px;overflow:auto}
pre.reasoning{background:#f6f8fa;border-left:3px solid #0969da;padding:8px 10px;max-height:480px;overflow:auto}
pre.reason{font-family:inherit;font-size:13px}
pre.diff{background:#f6f8fa;border:1px solid #d8dee4;border-radius:4px;padding:6px 0;max-height:520px;overflow:auto}
pre.diff span{display:block;padding:0 8px} pre.diff .add{background:#dafbe1;color:#116329}
pre.diff .del{background:#ffebe9;color:#82071e} pre.diff .hunk{color:#8250df;background:#f3f0ff}
pre.diff .hdr{color:#57606a;font-weight:600}
.change code{background:#f6f8fa;padding:1px 5px;border-radius:3px}
.badge{display:inline-block;font-size:12px;padding:1px 8px;border-radius:10px;vertical-align:middle;font-weight:600}
.badge.kept{background:#dafbe1;color:#116329} .badge.bad{background:#ffebe9;color:#a40e26}
.badge.none{background:#eaeef2;color:#424a53} .badge.initial{background:#ddf4ff;color:#0550ae}
section.step{border:1px solid #d0d7de;border-radius:6px;padding:12px 14px;margin:12px 0}
.facts{font-size:13px;color:#424a53;margin:2px 0}
.verdict{font-size:13px;margin:6px 0;font-weight:600} .verdict.kept{color:#116329} .verdict.bad{color:#a40e26}
.param{border:1px solid #d0d7de;border-radius:6px;padding:10px 12px;margin:10px 0}
.param .cols{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.pname{font-weight:600;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:6px 0 4px}
.param-change{margin:6px 0 10px}
details summary{cursor:pointer;font-size:13px;margin:6px 0}
a{color:#0969da}
pre.outcome{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;font-size:13px;
white-space:pre-wrap}
"""


def render_report(data: RunData) -> str:
    """The whole report page for a loaded run."""
    config, checkpoint = data.config, data.checkpoint
    initial = data.initial
    steps = data.steps
    last = data.history[-1] if data.history else None
    if checkpoint is not None:
        initial_score, best_score, usage = checkpoint.initial_score, checkpoint.best_score, checkpoint.usage
        failed_runs: int | None = checkpoint.errors
    else:  # from the history alone
        initial_score = initial.eval_score if initial else None
        best_score = last.best_score if last else None
        usage = (last.usage if last else None) or Usage()
        failed_runs = last.errors_total if last else None
    title = f"Optimization report: {data.path.resolve().name}"
    body = [f"<h1>{e(title)}</h1>", f'<p class="sub">{e(data.path.resolve())} · {e(_status(data))}</p>']
    body += [f'<p class="warn">{e(w)}</p>' for w in data.warnings]
    body.append(f'<pre class="outcome">{e(_outcome_text(data, initial_score, best_score))}</pre>')
    # summary
    cards = [
        ("initial score", _fmt(initial_score)),
        ("best score", _fmt(best_score)),
        ("steps finished", f"{len(steps)}" + (f" / {config['max_steps']}" if config.get("max_steps") else "")),
        ("optimizer LLM calls", f"{usage.calls}"),
        ("tokens", f"{usage.total_tokens:,}"),
        ("cost", f"${usage.cost_usd:.4f}"),
    ]
    body.append(
        '<div class="cards">'
        + "".join(f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div></div>' for k, v in cards)
        + "</div>"
    )
    facts = [
        ("optimizer", config.get("optimizer")),
        ("model", config.get("model")),
        ("endpoint (base_url)", config.get("base_url") or ("(none recorded)" if config else None)),
        ("stopped", _status(data)),
        (
            "training / validation examples",
            f"{config.get('trainset_size', '?')} / {config.get('valset_size', '?')}" if config else None,
        ),
        (
            "batch size, threads",
            f"{config.get('batch_size', '?')}, {config.get('num_threads', '?')}" if config else None,
        ),
        ("budgets", _budgets(config)),
        ("failed runs", failed_runs),
        ("LLM usage", _usage_text(usage) if checkpoint is not None or last is not None else None),
        ("started", _time(initial.time if initial else None)),
        ("last step saved", _time((last.time if last else None) or (checkpoint.time if checkpoint else None))),
        ("resume recipe", config.get("recipe")),
    ]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts if v not in (None, ""))
    body.append(f'<h2>Run</h2><table class="grid run">{rows}</table>')
    # plot and overview
    body.append(f"<h2>Score per step</h2>{score_plot(data.history)}")
    if data.history:
        body.append(_overview(data))
    # parameters, and whether feedback reaches them
    body.append(_parameters(data))
    body.append(_coverage(data))
    # steps
    body.append("<h2>Steps</h2>")
    if initial:
        body.append(
            f'<section class="step" id="step-0"><h3>Step 0 <span class="badge initial">initial</span></h3>'
            f'<p class="facts">score of the initial values {e(_fmt(initial.eval_score))}</p>'
            f"</section>"
        )
    if not steps:
        body.append('<p class="muted">No optimization step has finished yet.</p>')
    previous = initial
    for record in steps:
        body.append(_step_section(record, previous, data))
        previous = record
    # graph
    body.append("<h2>Trace graph</h2>")
    if data.graph is not None and data.graph_file is not None:
        body.append(
            f'<p class="muted">One traced run from <code>{e(data.graph_file.relative_to(data.path))}</code> '
            f"(the latest step's first example).</p>"
        )
        body.append(drawing.graph_fragment(data.graph))
    else:
        body.append('<p class="muted">No graph was saved (graphs/step-K.json is missing).</p>')
    if config:
        body.append(
            f"<h2>Settings</h2><details><summary>config.json</summary><pre class='value'>"
            f"{e(json.dumps(config, ensure_ascii=False, indent=2, default=repr))}</pre></details>"
        )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(title)}</title>'
        f"<style>{REPORT_CSS}{drawing.GRAPH_CSS}</style></head><body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


def _outcome_text(data: RunData, initial_score: Any, best_score: Any) -> str:
    """The result block the ``opto`` command prints: start and best score, where, what changed, why it stopped."""
    checkpoint, config = data.checkpoint, data.config
    stopped = checkpoint.status if checkpoint is not None and checkpoint.done else "not finished"
    outcome = outcome_of(
        [record.to_dict() for record in data.history],
        start_score=finite_number(initial_score),
        best_score=finite_number(best_score),
        best_values=_best_values(data)[0],
        best_on=checkpoint.best_score_on if checkpoint is not None else "",
        stopped=stopped,
        error=checkpoint.error if checkpoint is not None else "",
        valset_size=config.get("valset_size"),
        trainset_size=config.get("trainset_size"),
        max_steps=config.get("max_steps"),
    )
    return outcome.text()


def _status(data: RunData) -> str:
    checkpoint = data.checkpoint
    if checkpoint is None:
        return "no checkpoint yet (crashed or still running)"
    status = checkpoint.status
    if checkpoint.done:
        return f"finished after step {checkpoint.step}: {_STOP_REASONS.get(status, status or 'done')}"
    return (
        f"not finished: running, or stopped abnormally, after step {checkpoint.step} "
        f"(resume with optimize(..., run_dir=...) or `opto resume`)"
    )


def _budgets(config: dict[str, Any]) -> str | None:
    names = ("max_llm_calls", "max_tokens", "max_cost_usd", "target_score", "max_errors")
    set_ = [f"{name}={config[name]}" for name in names if config.get(name) is not None]
    return ", ".join(set_) if set_ else ("none" if config else None)


def _time(stamp: Any) -> str | None:
    number = finite_number(stamp)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return None


def _overview(data: RunData) -> str:
    rows = []
    previous = None
    for record in data.history:
        outcome, css = _outcome(record)
        usage = _step_usage(record, previous) if record.kind == STEP else Usage()
        proposal = record.proposal or Proposal()
        step = record.step
        rows.append(
            f'<tr><td class="num"><a href="#step-{e(step)}">{e(step)}</a></td>'
            f'<td><span class="badge {css}">{e(outcome)}</span></td>'
            f'<td class="num">{e(_fmt(record.batch_score))}</td>'
            f'<td class="num">{e(_fmt(record.eval_score))}</td>'
            f'<td class="num">{e(_fmt(record.best_score))}</td>'
            f"<td>{e(', '.join(map(str, proposal.accepted)) or '–')}</td>"
            f"<td>{e(', '.join(map(str, proposal.rejected)) or '–')}</td>"
            f'<td class="num">{usage.total_tokens:,}</td><td class="num">${usage.cost_usd:.4f}</td></tr>'
        )
        previous = record
    return (
        '<table class="grid overview"><tr><th>step</th><th>outcome</th><th>batch score</th>'
        '<th>score after</th><th>best</th><th>proposed</th><th>rejected</th><th>tokens</th><th>cost</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _parameters(data: RunData) -> str:
    """Initial and best value of every trainable parameter, with a diff."""
    initial = data.initial
    first_step = data.steps[0] if data.steps else None
    start = (initial.values if initial else None) or (first_step.values_before if first_step else None) or {}
    best, source = _best_values(data)
    specs = {p.get("name"): p for p in data.config.get("parameters", []) if isinstance(p, dict)}
    names = list(dict.fromkeys([*start, *best]))
    out = ["<h2>Parameters: initial and best values</h2>"]
    if source:
        out.append(f'<p class="muted">{e(source)}</p>')
    if not names:
        out.append('<p class="muted">No parameter values recorded yet.</p>')
    current = data.checkpoint.current if data.checkpoint is not None else None
    for name in names:
        spec = specs.get(name, {})
        kind = spec.get("kind", "")
        changed = name in start and name in best and start[name] != best[name]
        badge = '<span class="badge kept">changed</span>' if changed else '<span class="badge none">unchanged</span>'
        constraint = f' <span class="muted">{e(spec.get("constraint"))}</span>' if spec.get("constraint") else ""
        out.append(
            f'<div class="param"><div class="pname">{e(name)} <span class="muted">{e(kind)}</span> '
            f"{badge}</div>{constraint}"
        )
        out.append(
            f'<div class="cols"><div><h4>initial</h4>{value_html(start.get(name), name not in start)}</div>'
            f'<div><h4>best</h4>{value_html(best.get(name), name not in best)}</div></div>'
        )
        if changed:
            out.append(f"<h4>diff</h4>{diff_html(start[name], best[name])}")
        if isinstance(current, dict) and name in current and name in best and current[name] != best[name]:
            out.append(
                f'<p class="muted">The run\'s current value differs from the best (the run is not '
                f'finished):</p>{value_html(current[name])}'
            )
        out.append("</div>")
    return "".join(out)


def _coverage(data: RunData) -> str:
    """The coverage check of the first evaluation: which parameters feedback reaches, and why not."""
    found = data.initial.coverage if data.initial is not None else None
    if not isinstance(found, dict):
        return ""
    covered = Coverage.from_dict(found)
    rows = "".join(
        f"<tr><td><code>{e(p.name)}</code></td><td>{'yes' if p.reached else 'frozen' if p.cause == 'frozen' else '<b>no</b>'}"
        f"</td><td>{e(' → '.join(p.path) if p.reached else p.reason)}"
        + (f"<br><span class='muted'>fix: {e(p.fix)}</span>" if p.trainable and not p.reached else "")
        + "</td></tr>"
        for p in covered
    )
    head = (
        f'<p class="warn">Feedback never reaches {len(covered.unreached)} trainable parameter(s): '
        f'{e(", ".join(covered.unreached))}. The optimizer never saw them.</p>'
        if covered.unreached
        else f'<p class="facts">{e(covered.note or "Feedback reaches every trainable parameter.")}</p>'
    )
    return (
        f"<h2>Coverage</h2>{head}<table class='grid'><tr><th>parameter</th><th>reached</th>"
        f"<th>path to the output, or why not</th></tr>{rows}</table>"
    )


def _best_values(data: RunData) -> tuple[dict[str, Any], str]:
    if data.checkpoint is not None:
        return data.checkpoint.best, ""
    # no checkpoint: the last kept step that reached the best score, else the initial values
    initial = data.initial
    best: dict[str, Any] = (initial.values if initial else None) or {}
    for record in data.steps:
        if record.kept and record.values_after is not None and record.current_score == record.best_score:
            best = record.values_after
    return best, "No checkpoint: the best values are taken from history.jsonl."


# ----- writing -----------------------------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    """A page, shared (not private like run files), with no secret and always valid UTF-8, written atomically."""
    from opto_core.kernel.bounds import without_surrogates
    from opto_core.kernel.redact import redact

    write_text_atomic(path, without_surrogates(redact(text)), private=False)


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the HTML report of a run directory (default ``run_dir/report.html``) and return its path."""
    data = load_run(run_dir)
    target = Path(out) if out is not None else data.path / "report.html"
    if target.is_dir():
        target = target / "report.html"
    _write_text(target, render_report(data))
    return target


def write_graph_files(
    graph_json_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Draw one graph file: ``<name>.html`` (SVG plus Mermaid and DOT sources) and ``<name>.dot``."""
    source = Path(graph_json_path)
    if not source.is_file():
        raise ReportError(f"{source} is not a file: give an OPTO graph JSON file such as RUN_DIR/graphs/step-1.json")
    try:
        graph = Graph.from_json(source.read_text(encoding="utf-8"))
    except GraphError as exc:
        raise ReportError(f"{source} is not an OPTO graph: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"{source} is not a text file: {exc}") from exc
    folder = Path(out_dir) if out_dir is not None else source.parent
    html_path, dot_path = folder / f"{source.stem}.html", folder / f"{source.stem}.dot"
    name = graph.meta.get("target") or graph.meta.get("run")
    title = f"OPTO graph: {source.name}" + (f" ({name})" if name else "")
    _write_text(html_path, drawing.graph_html(graph, title=title))
    _write_text(dot_path, drawing.to_dot(graph))
    return [html_path, dot_path]
