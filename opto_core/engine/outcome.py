"""What a run achieved, in one short block a person can read.

    start score  0.480 on the validation set (4 examples)
    best score   0.910 on the validation set, reached at step 2 (+0.430)
    change       model.temperature 0.9 -> 0.1 (by the search part, step 1)
                 prompt.system: new text, 84 characters (by the LLM, step 2)
    stopped      after 3 of 3 steps: reached the step limit (max_steps)

Scores only compare when they were measured on the same examples: on the validation set when
there is one; without one, the start score is the whole training set and the best values are
re-scored on the whole training set at the end (never a batch score against a full-set score).
The same block heads ``opto``'s result and the HTML report (`outcome_of` reads a result or a run
directory's files alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["Change", "Outcome", "STOP_REASONS", "outcome_of"]

#: Why a run stopped, as a person says it.
STOP_REASONS = {
    "max_steps": "reached the step limit (max_steps)",
    "max_seconds": "reached its deadline (max_seconds)",
    "max_llm_calls": "optimizer LLM call budget used up (max_llm_calls)",
    "max_tokens": "optimizer token budget used up (max_tokens)",
    "max_cost_usd": "optimizer cost budget used up (max_cost_usd)",
    "max_evaluations": "workflow run budget used up (max_evaluations)",
    "target_score": "target score reached",
    "stop_file": "stopped by a STOP file",
    "interrupted": "stopped by Ctrl-C",
    "max_errors": "too many failed runs (max_errors)",
    "optimizer_error": "the optimizer's LLM failed",
    "provider_error": "the workflow's model provider failed every run",
    "invalid_values": "parameters held invalid values",
    "already_finished": "the run directory already held a finished run",
}
PROPOSERS = {"search": "the search part", "llm": "the LLM"}


@dataclass
class Change:
    """One parameter whose best value differs from its start value, and who proposed it when."""

    name: str
    before: Any
    after: Any
    proposed_by: str = ""
    step: int | None = None

    def text(self) -> str:
        short = isinstance(self.after, (int, float, bool)) or (
            isinstance(self.after, str) and len(self.after) <= 40 and "\n" not in self.after
        )
        what = (
            f"{self.name} {_value(self.before)} -> {_value(self.after)}"
            if short
            else f"{self.name}: {describe_new(self.after)}"
        )
        origin = [PROPOSERS.get(self.proposed_by, self.proposed_by)] if self.proposed_by else []
        origin += [f"step {self.step}"] if self.step is not None else []
        return what + (f" (by {', '.join(origin)})" if origin else "")


@dataclass
class Outcome:
    """The start and best score, where each was measured, what changed, and why the run stopped."""

    start_score: float | None
    best_score: float | None
    scored_on: str
    best_on: str
    changes: list[Change] = field(default_factory=list)
    stopped: str = ""
    steps: int = 0
    max_steps: int | None = None
    error: str = ""

    @property
    def improvement(self) -> float | None:
        if self.start_score is None or self.best_score is None or not self.comparable:
            return None
        return self.best_score - self.start_score

    @property
    def comparable(self) -> bool:
        """Whether the best score was measured on the same examples as the start score."""
        return not self.best_on.startswith("the last kept batch")

    def lines(self) -> list[str]:
        """The block, one line per fact (see the module docstring)."""
        delta = self.improvement
        gain = f" ({delta:+.3f})" if delta else (" (no change)" if delta == 0 and self.changes else "")
        lines = [
            f"start score  {_score(self.start_score)} on {self.scored_on}",
            f"best score   {_score(self.best_score)} {self.best_on}{gain}",
        ]
        if self.changes:
            lines += [
                ("change       " if i == 0 else "             ") + change.text()
                for i, change in enumerate(self.changes)
            ]
        else:
            lines.append("change       none: the start values stayed the best")
        limit = f" of {self.max_steps}" if self.max_steps else ""
        reason = STOP_REASONS.get(self.stopped, self.stopped)
        lines.append(
            f"stopped      after {self.steps}{limit} step{'s' if (self.max_steps or self.steps) != 1 else ''}: "
            f"{reason}" + (f": {self.error}" if self.error and self.error not in reason else "")
        )
        return lines

    def text(self) -> str:
        return "\n".join(self.lines())


def _score(value: Any) -> str:
    return "-    " if value is None else f"{value:.3f}"


def _value(value: Any) -> str:
    """A short value as a person reads it: floats to 4 significant digits, strings quoted."""
    if isinstance(value, float):
        text = f"{value:.4g}"
        return text if any(c in text for c in ".ein") else text + ".0"
    return repr(value) if isinstance(value, str) else str(value)


def describe_new(value: Any) -> str:
    """A long new value in a few words: "new code, 4 lines", "new text, 120 characters"."""
    if isinstance(value, str):
        if value.lstrip().startswith(("def ", "async def ")):
            return f"new code, {len(value.strip().splitlines())} lines"
        return f"new text, {len(value)} characters"
    return f"new {type(value).__name__}, {len(str(value))} characters"


def changes_of(history: Sequence[dict[str, Any]], start: dict[str, Any], best: dict[str, Any]) -> list[Change]:
    """Each parameter whose best value differs from its start value, with the kept step that set it."""
    changes = []
    for name, after in best.items():
        before = start.get(name)
        if before == after:
            continue
        change = Change(name, before, after)
        for record in reversed(history):
            proposal = record.get("proposal") or {}
            if record.get("kept") and (proposal.get("accepted") or {}).get(name) == after:
                change.step = record.get("step")
                change.proposed_by = (proposal.get("proposed_by") or {}).get(name, "")
                break
        changes.append(change)
    return changes


def where_scored(valset_size: int | None, trainset_size: int | None) -> str:
    """Which examples the start score (and, with a validation set, every judgement) used."""
    if valset_size:
        return f"the validation set ({valset_size} held-out examples)"
    return f"the training set ({trainset_size} examples)" if trainset_size else "the training set"


def outcome_of(
    history: Sequence[dict[str, Any]],
    *,
    start_score: float | None,
    best_score: float | None,
    best_values: dict[str, Any],
    best_on: str,
    stopped: str,
    error: str = "",
    valset_size: int | None = None,
    trainset_size: int | None = None,
    max_steps: int | None = None,
) -> Outcome:
    """The `Outcome` of a run from its history and final state (a result's fields or a run directory's)."""
    initial = next((r for r in history if r.get("kind") == "initial"), None) or {}
    start = initial.get("values") or {}
    steps = sum(1 for r in history if r.get("kind") == "step")
    changes = changes_of(history, start, best_values) if start else []
    scored_on = initial.get("scored_on") or where_scored(valset_size, trainset_size)
    best_on = best_on or ("on the validation set" if "validation" in scored_on else "on the training set")
    if best_on == "on the validation set" and changes:
        reached = [
            r.get("step")
            for r in history
            if r.get("kind") == "step" and r.get("kept") and r.get("eval_score") == best_score
        ]
        if reached:  # the first step that reached it set the best values (a later equal score does not)
            best_on += f", reached at step {reached[0]}"
    return Outcome(start_score, best_score, scored_on, best_on, changes, stopped, steps, max_steps, error)
