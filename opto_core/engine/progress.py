"""Showing a run while it runs: one live line in a terminal, plain lines anywhere else.

`RunDisplay` is an ``on_event`` listener (`opto_core.engine.events`). In a terminal it keeps one
line up to date (rich ``Live``, redrawn four times a second so the seconds of an optimizer call
in flight tick):

    step 2/5 · check 3/4 runs · optimizer 8.2 s · 12,340 tokens $0.0123 · best 0.750

and prints, per step, only what changed and why (``step_lines``). Without a terminal (a pipe, CI,
a log file) there is no live line and no control character: the same step lines, plus one line when
an optimizer call or a wait for the provider starts, so a long silence is explained.
``optimize(..., progress=True)`` uses it on standard error; the ``opto`` command on its console.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from opto_core.engine.events import (
    EvaluationDone,
    OptimizerCallFinished,
    OptimizerCallStarted,
    ProviderRetrying,
    RunEvent,
    RunFinished,
    RunStarted,
    StepDecided,
    StepStarted,
)
from opto_core.engine.outcome import _value, describe_new
from opto_core.kernel.redact import redact

__all__ = ["RunDisplay", "step_lines"]

#: Who proposed a value, as the step line says it.
PROPOSERS = {"search": "the search part", "llm": "the LLM"}


def _score(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def step_lines(record: dict[str, Any], *, detail: int = 160) -> list[str]:
    """What a person needs from one step record: the decision (kept or not, and why, with the scores),
    each change (old -> new for short values) with who proposed it, what was rejected, and the
    optimizer's reasoning in one line."""
    proposal = record.get("proposal") or {}
    before = record.get("values_before") or {}
    decision = record.get("decision") or ("kept" if record.get("kept") else "not kept")
    lines = [f"step {record.get('step')}: {_short(decision, detail)}; best so far {_score(record.get('best_score'))}"]
    proposers = proposal.get("proposed_by") or {}
    for name, value in (proposal.get("accepted") or {}).items():
        if before.get(name) == value:
            continue
        who = PROPOSERS.get(proposers.get(name, ""), "")
        short = isinstance(value, (int, float, bool)) or (
            isinstance(value, str) and len(value) <= 40 and "\n" not in value
        )
        change = f"{_value(before.get(name))} -> {_value(value)}" if short else describe_new(value)
        lines.append(f"  {name}: {change}" + (f" (by {who})" if who else ""))
    for name, reason in (proposal.get("rejected") or {}).items():
        lines.append(f"  rejected {name}: {_short(reason, detail)}")
    if proposal.get("error"):  # the answer could not be used (no JSON, a wrong shape): said, not left in the file
        lines.append(f"  the LLM's answer could not be used: {_short(proposal['error'], detail)}")
    if proposal.get("reasoning") and proposal.get("accepted"):
        lines.append(f"  optimizer's reasoning: {_short(proposal['reasoning'], detail)}")
    return lines


class RunDisplay:
    """An ``on_event`` listener that shows the run (see the module docstring).

    ``console``: where to write (default: standard error); ``live``: force the live line on or off
    (default: on exactly when the console is a terminal); ``steps``: print the step lines.
    """

    def __init__(self, console: Console | None = None, *, live: bool | None = None, steps: bool = True) -> None:
        self.console = console or Console(file=sys.stderr)
        self.live_enabled = self.console.is_terminal if live is None else live
        self.show_steps = steps
        self._live: Any = None
        self.max_steps = 0
        self.step = 0
        self.phase = ""
        self.done = self.total = 0
        self.call_started: float | None = None
        self.waiting_until: float | None = None
        self.usage: dict[str, Any] = {}
        self.tokens = 0
        self.cost = 0.0
        self.best: float | None = None

    # ----- events ------------------------------------------------------------------------------------
    def __call__(self, event: RunEvent) -> None:
        self.tokens, self.cost = event.tokens, event.cost_usd
        if event.best_score is not None:
            self.best = event.best_score
        if isinstance(event, RunStarted):
            self.max_steps = event.max_steps
            self._start_live()
        elif isinstance(event, StepStarted):
            self.step, self.phase, self.done, self.total = event.step, "batch", 0, 0
        elif isinstance(event, EvaluationDone):
            self.step, self.phase, self.done, self.total = event.step, event.which, event.done, event.total
            self.waiting_until = None
        elif isinstance(event, ProviderRetrying):
            self.waiting_until = time.monotonic() + event.wait
            self._plain(f"{event.message}; running them again in {event.wait:.1f} s")
        elif isinstance(event, OptimizerCallStarted):
            self.call_started = time.monotonic()
            self._plain(f"step {event.step}: asking the optimizer for a proposal")
        elif isinstance(event, OptimizerCallFinished):
            seconds, self.call_started = event.seconds, None
            self._plain(
                f"step {event.step}: proposal in {seconds:.1f} s ({event.call_tokens:,} tokens"
                + (f", ${event.call_cost_usd:.4f}" if event.call_cost_usd else "")
                + ")"
                + (f"; failed: {event.error}" if event.error else "")
            )
        elif isinstance(event, StepDecided):
            self.call_started = None
            if self.show_steps:
                for line in step_lines(event.record):
                    self._print(line)
        elif isinstance(event, RunFinished):
            self.close()
        self._refresh()

    def _plain(self, line: str) -> None:
        """A line for consoles without a live line (in a terminal the live line says it)."""
        if not self.live_enabled:
            self._print(line)

    def _print(self, line: str) -> None:
        """Every line shown passes the redactor: a record holds what a workflow echoed (a key in an
        SDK's 401), a decision or reasoning may repeat it, and a terminal is no place for a secret."""
        self.console.print(escape(redact(line)), highlight=False, soft_wrap=True)

    # ----- the live line -----------------------------------------------------------------------------
    def line(self) -> Text:
        """The live line, as it reads now."""
        parts = [f"step {self.step}/{self.max_steps}" if self.step else "initial evaluation"]
        if self.call_started is not None:
            parts.append(f"optimizer call {time.monotonic() - self.call_started:.1f} s")
        elif self.waiting_until is not None and self.waiting_until > time.monotonic():
            parts.append(f"provider busy, retrying in {self.waiting_until - time.monotonic():.0f} s")
        elif self.total:
            parts.append(f"{self.phase} {self.done}/{self.total} runs")
        parts.append(f"{self.tokens:,} tokens" + (f" ${self.cost:.4f}" if self.cost else ""))
        parts.append(f"best {_score(self.best)}")
        return Text(" · ".join(parts), style="bold cyan")

    def __rich__(self) -> Text:
        return self.line()

    def _start_live(self) -> None:
        if self.live_enabled and self._live is None:
            from rich.live import Live

            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def close(self) -> None:
        """Remove the live line (idempotent)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
