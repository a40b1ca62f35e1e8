"""Approval: a person (or a policy function) sees each proposal's changes before anything is applied.

``optimize(..., approve=callable)`` calls ``approve(changes)`` with one `Change` per parameter
the proposal would change (old and new value, and a unified diff for text and code), after
validation and before any value is written. The answer decides, per parameter:

- ``True`` or ``None``: accept every change;
- ``False``: reject every change;
- a dict ``{name: value}``: each name listed is accepted with that value (the proposed one, or an
  edit), every change not listed is rejected. An edited value goes through validation again
  (the caller's job: the loop validates it like any proposal).

`review` turns the answer into ``(approved values, decisions)``; `terminal_approver` asks in the
terminal (the CLI's ``--approve``) and rejects everything when stdin is not a terminal.
"""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from opto_core.kernel.text import as_text

Decision = str  # "accepted" | "edited" | "rejected"
Approver = Callable[[list["Change"]], Any]


@dataclass(frozen=True)
class Change:
    """One parameter's proposed change."""

    name: str
    kind: str  # the parameter kind: "text", "code", "float", ...
    old: Any
    new: Any
    diff: str  # a unified diff for text and code; "old -> new" for other kinds

    def describe(self) -> str:
        return f"{self.name} ({self.kind})\n{self.diff}"


def diff_of(name: str, old: Any, new: Any, kind: str = "") -> str:
    """A unified diff of two values (text, code, JSON), or ``old -> new`` for a number or choice."""
    if kind in ("float", "int", "choice") or not (
        isinstance(old, (str, list, dict)) or isinstance(new, (str, list, dict))
    ):
        return f"{old!r} -> {new!r}"
    lines = difflib.unified_diff(
        as_text(old, indent=1).splitlines(keepends=True),
        as_text(new, indent=1).splitlines(keepends=True),
        fromfile=f"{name} (current)",
        tofile=f"{name} (proposed)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def changes_of(
    values_before: Mapping[str, Any], accepted: Mapping[str, Any], kinds: Mapping[str, str] | None = None
) -> list[Change]:
    """One `Change` per accepted value that differs from its value before."""
    kinds = kinds or {}
    found = []
    for name, new in accepted.items():
        old = values_before.get(name)
        if old == new:
            continue
        kind = kinds.get(name) or _guess_kind(new)
        found.append(Change(name, kind, old, new, diff_of(name, old, new, kind)))
    return found


def _guess_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "json"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "code" if value.lstrip().startswith(("def ", "async def ", "import ", "from ")) else "text"
    return "json"


def review(
    approve: Approver,
    values_before: Mapping[str, Any],
    accepted: Mapping[str, Any],
    kinds: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Decision]]:
    """Ask ``approve`` about the changes in ``accepted``; return ``(approved values, decisions)``.

    Values equal to their value before are not changes and are not asked about (they stay
    approved as they are). A name in the answer that was not proposed is an error (``ValueError``):
    approval edits proposals, it does not add parameters. Edited values are NOT validated here.
    """
    changes = changes_of(values_before, accepted, kinds)
    unchanged = {name: value for name, value in accepted.items() if values_before.get(name) == value}
    if not changes:
        return dict(unchanged), {}
    answer = approve(list(changes))
    if answer is None or answer is True:
        return dict(accepted), {change.name: "accepted" for change in changes}
    if answer is False:
        return dict(unchanged), {change.name: "rejected" for change in changes}
    if not isinstance(answer, Mapping):
        raise TypeError(
            f"approve() must return True, False, None or a dict {{name: value}}, got {type(answer).__name__}"
        )
    proposed = {change.name for change in changes}
    extra = [name for name in answer if name not in proposed]
    if extra:
        raise ValueError(
            f"approve() returned values for parameters that were not proposed: {extra}; proposed: {sorted(proposed)}"
        )
    approved = dict(unchanged)
    decisions: dict[str, Decision] = {}
    for change in changes:
        if change.name not in answer:
            decisions[change.name] = "rejected"
            continue
        value = answer[change.name]
        approved[change.name] = value
        decisions[change.name] = "accepted" if value == change.new else "edited"
    return approved, decisions


def terminal_approver(console: Any = None, stdin: Any = None) -> Approver:
    """An approver that shows each change (a diff) and asks accept / reject / edit in the terminal.

    When stdin is not a terminal nobody can answer: every change is rejected, and it says so.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.prompt import Prompt
    from rich.syntax import Syntax

    console = console or Console()
    stream = stdin or sys.stdin

    def approve(changes: Sequence[Change]) -> dict[str, Any]:
        if not getattr(stream, "isatty", lambda: False)():
            console.print(
                f"[yellow]--approve: stdin is not a terminal, so nobody can answer; rejecting "
                f"{len(changes)} proposed change(s)[/yellow]"
            )
            return {}
        answer: dict[str, Any] = {}
        for change in changes:
            console.rule(f"proposed change to {escape(change.name)} ({change.kind})")
            console.print(
                Syntax(change.diff, "diff", word_wrap=True) if change.diff.startswith("---") else escape(change.diff)
            )
            choice = Prompt.ask(
                "accept, reject or edit?", choices=["a", "r", "e"], default="r", console=console, stream=stream
            )
            if choice == "a":
                answer[change.name] = change.new
            elif choice == "e":
                answer[change.name] = _edit(change, console, stream)
        return answer

    return approve


def _edit(change: Change, console: Any, stream: Any) -> Any:
    """Edit in $EDITOR (click.edit) for text and code; a typed value (JSON) for the others."""
    from rich.prompt import Prompt

    if change.kind in ("text", "code") and isinstance(change.new, str):
        import click

        edited = click.edit(change.new, extension=".py" if change.kind == "code" else ".txt")
        return change.new if edited is None else edited
    raw = Prompt.ask("new value (JSON)", default=json.dumps(change.new), console=console, stream=stream)
    try:
        return json.loads(raw)
    except ValueError:
        return raw
