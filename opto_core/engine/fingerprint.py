"""Noticing a changed workflow: the fingerprint a run directory keeps of the parameters it started with.

Resuming a run after the workflow's code was edited would apply values found for the old workflow
to the new one, silently. So a run directory keeps, from its first step on, a fingerprint of every
parameter (trainable or frozen): its name, kind, constraints and a hash of its initial value (for
code, its source). Resuming compares the workflow in hand with it and refuses on any difference,
saying what changed ("tool body of calc.tools.add.code changed", "parameter 'tone' is new"), with
the two ways out: ``fresh=True`` (start over in this directory) or ``resume_changed=True`` (continue
with the saved values anyway).

A parameter whose value equals the run's saved current or best value is not a change: that is
the same workflow object after (part of) the run, not an edit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Sequence

from opto_core.engine.rundir import RunDirError

__all__ = ["FORMAT", "WorkflowChanged", "differences", "fingerprint", "value_hash"]

FORMAT = "opto-fingerprint/1"


class WorkflowChanged(RunDirError):
    """The run directory was started with a different workflow (its parameters differ); nothing was changed."""

    def __init__(self, run_dir: str, changes: Sequence[str]) -> None:
        self.run_dir, self.changes = run_dir, list(changes)
        shown = "; ".join(self.changes[:8]) + (f"; and {len(self.changes) - 8} more" if len(self.changes) > 8 else "")
        super().__init__(
            f"{run_dir} holds a run of a different workflow: {shown}. Its saved values were found for the old "
            f"one. To start over in this directory pass fresh=True (opto: --fresh); to continue with the saved "
            f"values anyway pass resume_changed=True (opto resume: --resume-changed); or use another run_dir"
        )


def value_hash(value: Any) -> str:
    """A stable hash of a value as JSON (what the run directory stores of values)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _preview(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _constraints(spec: dict[str, Any]) -> dict[str, Any]:
    return {key: spec[key] for key in ("lower", "upper", "choices") if key in spec}


def fingerprint(parameters: Iterable[Any]) -> dict[str, Any]:
    """The fingerprint of ``parameters`` (their names, kinds, constraints and value hashes)."""
    entries = []
    for parameter in parameters:
        spec = parameter.spec()
        entries.append(
            {
                "name": parameter.name,
                "kind": parameter.kind,
                "trainable": parameter.trainable,
                "constraints": _constraints(spec),
                "value": value_hash(parameter.value),
                "preview": _preview(parameter.value),
            }
        )
    return {"format": FORMAT, "parameters": entries}


def _what_changed(entry: dict[str, Any], parameter: Any) -> str:
    name = parameter.name
    if parameter.kind == "code":
        return f"tool body of {name} changed" if ".tools." in f".{name}" else f"code of {name} changed"
    return f"initial value of {name} changed ({entry.get('preview', '?')!r} -> {_preview(parameter.value)!r})"


def differences(
    stored: dict[str, Any], parameters: Sequence[Any], saved_values: Iterable[dict[str, Any] | None] = ()
) -> list[str]:
    """What differs between the run's fingerprint and ``parameters`` now, in words ([] when nothing).

    ``saved_values`` are value maps the run itself produced (its checkpoint's current and best
    values): a parameter holding one of those is the run's own doing, not an edit.
    """
    known = {entry["name"]: entry for entry in stored.get("parameters", []) if isinstance(entry, dict)}
    now = {parameter.name: parameter for parameter in parameters}
    saved = [values for values in saved_values if isinstance(values, dict)]
    changes = [f"parameter {name!r} is new" for name in now if name not in known]
    changes += [f"parameter {name!r} is gone" for name in known if name not in now]
    for name, parameter in now.items():
        entry = known.get(name)
        if entry is None:
            continue
        if entry.get("kind") != parameter.kind:
            changes.append(f"kind of {name} changed from {entry.get('kind')} to {parameter.kind}")
            continue
        if bool(entry.get("trainable")) != parameter.trainable:
            changes.append(f"{name} is now {'trainable' if parameter.trainable else 'frozen'}")
        constraints = _constraints(parameter.spec())
        if entry.get("constraints", {}) != json.loads(json.dumps(constraints, default=repr)):
            changes.append(f"constraints of {name} changed ({entry.get('constraints')} -> {constraints})")
        current = value_hash(parameter.value)
        if current != entry.get("value") and all(
            name not in values or value_hash(values[name]) != current for values in saved
        ):
            changes.append(_what_changed(entry, parameter))
    return changes
