"""Nothing changes around the optimizer: every parameter holds, after a run, exactly what the loop set.

The loop writes values only through `Target.apply`, after validation (and approval). Code that
runs inside an evaluation (LLM-written code above all, but any workflow code) can still reach a
parameter object and write it: ``p = PROMPT; p.value = "INJECTED"``, ``PROMPT.__init__(...)``, or a
JSON value changed in place. Such a write would be kept and saved as the best value, and
``approve=`` would never have seen it. `ValueGuard` takes what the loop set before each batch of
runs (values deep-copied, and each parameter's own fields), compares it afterwards (deep, type-exact
equality: ``1`` is not ``True`` and not ``1.0``), and puts back what changed. The loop then fails
those runs as "wrote around the optimizer" and rolls the step back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

from opto_core.kernel.parameters import Parameter

#: A Parameter's own fields a write around the optimizer could change (``PROMPT.__init__(...)``).
_FIELDS = ("name", "kind", "trainable", "lower", "upper", "choices", "max_length", "code_policy")


class WroteAroundOptimizer(RuntimeError):
    """A run changed a parameter's value (or the parameter itself) behind the optimizer's back."""


@dataclass
class Expected:
    """What the loop set: per parameter object, its fields and a deep copy of its value."""

    parameters: list[tuple[Parameter, dict[str, Any], Any, Any]]  # (object, fields, value, all attributes)
    snapshot: Any  # the target's own snapshot (bindings' raw state), to put everything back


class ValueGuard:
    """Takes what the loop set before runs, and reports (and undoes) any change after them."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def expect(self) -> Expected:
        entries = []
        for parameter in self.target.parameters():
            fields = {name: getattr(parameter, name, None) for name in _FIELDS}
            entries.append((parameter, fields, copy.deepcopy(parameter.value), dict(vars(parameter))))
        return Expected(entries, self.target.snapshot())

    def changes(self, expected: Expected) -> dict[str, str]:
        """Parameter name -> what changed, for every parameter that no longer holds what the loop set."""
        live = {id(p): p for p in self.target.parameters()}  # reads each bound value fresh
        found: dict[str, str] = {}
        for parameter, fields, value, _ in expected.parameters:
            name = fields["name"]
            if id(parameter) not in live:
                found[name] = "the parameter was replaced"
                continue
            changed = [
                field
                for field in _FIELDS
                if getattr(parameter, field, None) != fields[field]
                or type(getattr(parameter, field, None)) is not type(fields[field])
            ]
            if changed:
                found[name] = f"its {', '.join(changed)} changed"
            elif not same(parameter.value, value):
                found[name] = f"its value changed to {_short(parameter.value)}"
        return found

    def restore(self, expected: Expected) -> None:
        """Put back every parameter object as it was and every value the loop set."""
        for parameter, _, _, attributes in expected.parameters:
            vars(parameter).clear()
            vars(parameter).update(attributes)
        self.target.restore(expected.snapshot)
        for parameter, _, value, _ in expected.parameters:
            if not same(parameter.value, value):  # a value without a binding lives in the Parameter itself
                parameter.value = copy.deepcopy(value)


def same(a: Any, b: Any) -> bool:
    """Deep equality that also compares types (JSON ``1``, ``1.0`` and ``true`` are three values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


def wrote_around_reason(changes: dict[str, str]) -> str:
    listed = "; ".join(f"{name}: {what}" for name, what in sorted(changes.items()))
    return (
        f"a run wrote around the optimizer ({listed}); values change only through the optimizer's "
        "proposals, so the runs failed and every parameter holds again what the loop set"
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failed_evaluations(evaluations: Sequence[Any], reason: str, failure_score: float) -> list[Any]:
    """The same runs, each failed with ``reason`` (its score the failure score)."""
    import dataclasses

    from opto_core.kernel.feedback import Feedback

    error = WroteAroundOptimizer(reason)
    return [
        dataclasses.replace(
            e, output=error, failed=True, error_kind="wrote_around", feedback=Feedback(score=failure_score, text=reason)
        )
        for e in evaluations
    ]
