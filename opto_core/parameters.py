"""Parameters: the values an optimizer may change, and the rules a new value must pass.

Validation is the core's job: every value an optimizer suggests goes through
`Parameter.validate`, which returns the accepted (possibly converted) value or raises
`InvalidValue` with a reason that is sent back to the optimizer as feedback. Nothing
invalid ever reaches a framework. Conversions are lossless only: ``"0.5"`` becomes ``0.5``
for a float, ``10.0`` becomes ``10`` for an int, but ``10.5`` is never silently an int.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

ParameterKind = Literal["text", "code", "float", "int", "choice", "json"]
PARAMETER_KINDS: tuple[str, ...] = ("text", "code", "float", "int", "choice", "json")


class InvalidValue(ValueError):
    """A suggested value that a parameter rejects; ``reason`` is meant for the optimizer."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"parameter {parameter!r}: {reason}")
        self.parameter = parameter
        self.reason = reason


Check = Callable[[Any], Any]


@dataclass(eq=False)
class Parameter:
    """A named value an optimizer may change.

    ``name`` is stable across runs (e.g. ``qa_chain.prompt.system``) because the optimizer's
    suggestions, the checkpoints and the history are keyed by it. ``checks`` are extra rules an
    adapter adds (a template must keep its variables, tool code must keep its schema); each
    takes the converted value and returns it (possibly changed) or raises ``ValueError``.
    """

    name: str
    kind: str
    value: Any
    trainable: bool = True
    description: str = ""
    lower: float | None = None
    upper: float | None = None
    choices: list[Any] | None = None
    checks: list[Check] = field(default_factory=list, repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in PARAMETER_KINDS:
            raise ValueError(f"parameter {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(PARAMETER_KINDS)})")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice parameter needs its choices")
        if self.kind == "code":
            self._signature = _code_signature(self.name, self.value)

    # ----- describing -----------------------------------------------------------------
    def constraint(self) -> str:
        """The constraint as one line of text for the optimizer's prompt."""
        parts: list[str] = []
        if self.kind in ("float", "int"):
            if self.lower is not None and self.upper is not None:
                parts.append(f"{self.kind} in [{self.lower}, {self.upper}]")
            elif self.lower is not None:
                parts.append(f"{self.kind} >= {self.lower}")
            elif self.upper is not None:
                parts.append(f"{self.kind} <= {self.upper}")
            else:
                parts.append(f"any {self.kind}")
        elif self.kind == "choice":
            parts.append("one of " + ", ".join(json.dumps(c) for c in self.choices or []))
        elif self.kind == "code":
            name, signature, _ = self._signature
            parts.append(f"Python source of one function; keep the line `def {name}{signature}:`")
        elif self.kind == "json":
            parts.append(f"a JSON {type(self.value).__name__ if self.value is not None else 'value'}")
        else:
            parts.append("text")
        if self.description:
            parts.append(self.description)
        return "; ".join(parts)

    def spec(self) -> dict[str, Any]:
        """A JSON description (kind, constraints, trainable) stored on the graph's parameter node."""
        spec: dict[str, Any] = {"name": self.name, "kind": self.kind, "trainable": self.trainable}
        if self.description:
            spec["description"] = self.description
        if self.lower is not None:
            spec["lower"] = self.lower
        if self.upper is not None:
            spec["upper"] = self.upper
        if self.choices is not None:
            spec["choices"] = list(self.choices)
        spec["constraint"] = self.constraint()
        return spec

    def copy(self, **changes: Any) -> "Parameter":
        values = {key: getattr(self, key) for key in
                  ("name", "kind", "value", "trainable", "description", "lower", "upper", "choices")}
        values.update(changes)
        return Parameter(**values, checks=list(self.checks), meta=dict(self.meta))

    # ----- validating -----------------------------------------------------------------
    def validate(self, value: Any) -> Any:
        """Return the accepted value, or raise `InvalidValue` saying why it is rejected."""
        try:
            converted = getattr(self, f"_validate_{self.kind}")(value)
            for check in self.checks:
                result = check(converted)
                if result is not None:
                    converted = result
            return converted
        except InvalidValue:
            raise
        except (ValueError, TypeError, SyntaxError) as exc:
            raise InvalidValue(self.name, str(exc)) from exc

    def _fail(self, reason: str) -> InvalidValue:
        return InvalidValue(self.name, reason)

    def _validate_text(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._fail(f"expected text (a string), got {type(value).__name__} {_short(value)}")
        return value

    def _number(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                raise self._fail(f"expected a {self.kind}, got the string {_short(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(f"expected a {self.kind}, got {type(value).__name__} {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self._fail(f"expected a finite {self.kind}, got {value}")
        return value

    def _bounded(self, value: Any) -> Any:
        if self.lower is not None and value < self.lower:
            raise self._fail(f"{value} is below the lower bound {self.lower}")
        if self.upper is not None and value > self.upper:
            raise self._fail(f"{value} is above the upper bound {self.upper}")
        return value

    def _validate_float(self, value: Any) -> float:
        return self._bounded(float(self._number(value)))

    def _validate_int(self, value: Any) -> int:
        number = self._number(value)
        if isinstance(number, float):
            if not number.is_integer():
                raise self._fail(f"expected an int, got {number} (not a whole number)")
            number = int(number)
        return self._bounded(number)

    def _validate_choice(self, value: Any) -> Any:
        choices = self.choices or []
        if value in choices:
            return choices[choices.index(value)]
        if isinstance(value, str):  # "0.5" for a numeric choice, or a quoted string
            try:
                parsed = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                parsed = None
            if parsed is not None and parsed in choices:
                return choices[choices.index(parsed)]
        raise self._fail(f"{_short(value)} is not one of the choices {json.dumps(choices)}")

    def _validate_json(self, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(self.value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    raise self._fail(f"expected JSON, got text that does not parse: {_short(value)}") from None
        try:
            value = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise self._fail(f"not JSON-serialisable: {exc}") from None
        if self.value is not None and not _same_json_type(self.value, value):
            raise self._fail(f"expected a JSON {_json_type(self.value)}, got a JSON {_json_type(value)}")
        return value

    def _validate_code(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._fail(f"expected Python source code (a string), got {type(value).__name__}")
        name, signature, is_async = self._signature
        new_name, new_signature, new_async = _code_signature(self.name, value)
        if new_name != name:
            raise self._fail(f"the function must keep its name {name!r}, got {new_name!r}")
        if new_signature != signature or new_async != is_async:
            raise self._fail(f"the signature must stay `{name}{signature}`, got `{new_name}{new_signature}`")
        return value


def _code_signature(parameter: str, source: Any) -> tuple[str, str, bool]:
    """Parse code that must be: imports, an optional docstring and exactly one function definition.

    Returns ``(function name, signature text, is async)``; raises `InvalidValue` otherwise.
    """
    if not isinstance(source, str):
        raise InvalidValue(parameter, f"expected Python source code (a string), got {type(source).__name__}")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InvalidValue(parameter, f"the code does not parse: {exc.msg} (line {exc.lineno})") from None
    functions = []
    docstring_seen = False
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str) and not docstring_seen:
            docstring_seen = True  # a module docstring
            continue
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(statement)
            continue
        raise InvalidValue(parameter, f"only imports, a docstring and one function definition may stand at module "
                                      f"level; line {statement.lineno} is a {type(statement).__name__}")
    if len(functions) != 1:
        raise InvalidValue(parameter, f"the code must define exactly one function, found {len(functions)}")
    function = functions[0]
    try:
        compile(tree, f"<{parameter}>", "exec")
    except SyntaxError as exc:
        raise InvalidValue(parameter, f"the code does not compile: {exc.msg} (line {exc.lineno})") from None
    returns = f" -> {ast.unparse(function.returns)}" if function.returns is not None else ""
    return function.name, "(" + ast.unparse(function.args) + ")" + returns, isinstance(function, ast.AsyncFunctionDef)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _same_json_type(old: Any, new: Any) -> bool:
    return _json_type(old) == _json_type(new)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
