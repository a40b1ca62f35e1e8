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
from typing import Any, Callable, Literal, TypeVar

from opto_core.kernel.bounds import MAX_INT, MAX_JSON_DEPTH, json_depth, lone_surrogate, safe_repr, text_depth
from opto_core.kernel.code import CodeShapeError, FunctionShape, parse_function
from opto_core.kernel.code_policy import CodePolicy, namespace_of
from opto_core.kernel.invalid import InvalidValue
from opto_core.kernel.templates import STYLE_NAMES, Template, TemplateError, check_placeholders

__all__ = ["PARAMETER_KINDS", "InvalidValue", "Parameter", "ParameterKind"]

ParameterKind = Literal["text", "code", "float", "int", "choice", "json"]
PARAMETER_KINDS: tuple[str, ...] = ("text", "code", "float", "int", "choice", "json")
#: Longest text or code value accepted by default (characters). One huge value would make every
#: later prompt huge (the renderer keeps variables in full), so the optimizer is told to shorten it.
DEFAULT_MAX_LENGTH = 20_000


Check = Callable[[Any], Any]


_Number = TypeVar("_Number", int, float)


@dataclass(eq=False)
class Parameter:
    """A named value an optimizer may change.

    ``name`` is stable across runs (e.g. ``qa_chain.prompt.system``) because the optimizer's
    suggestions, the checkpoints and the history are keyed by it. ``template=True`` marks a text
    the program fills in (``SYSTEM.format(company=...)``): its placeholders become a constraint
    every new value must keep, shown to the optimizer and checked by `validate`. ``checks`` are extra rules an
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
    #: longest text or code value `validate` accepts (characters); None for no limit
    max_length: int | None = DEFAULT_MAX_LENGTH
    #: for code: "strict", "permissive" or a `opto_core.kernel.code_policy.CodePolicy` (set by `apply_policy`)
    code_policy: Any = field(default="strict", repr=False)
    #: for code: the live function the source came from; the policy reads its namespace to tell a
    #: module from another object (without it, names the policy cannot resolve are judged strictly)
    origin: Any = field(default=None, repr=False)
    #: for text: the value is a template the program fills in (``True``: its style is detected; or a
    #: style of `opto_core.kernel.templates.STYLES`, e.g. ``"jinja"``). Every new value must keep its
    #: placeholders and add none (`opto_core.kernel.templates.check_placeholders`), and provenance
    #: credits it where its filled-in text went.
    template: bool | str = False

    def __post_init__(self) -> None:
        """A parameter is valid from the start: its name, kind, bounds and initial value are checked here."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a parameter needs a non-empty string name, got {self.name!r}")
        if self.kind not in PARAMETER_KINDS:
            raise ValueError(
                f"parameter {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(PARAMETER_KINDS)})"
            )
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice parameter needs its choices")
        for bound in ("lower", "upper"):
            value = getattr(self, bound)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            ):
                raise ValueError(f"parameter {self.name!r}: the {bound} bound must be a number, got {value!r}")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"parameter {self.name!r}: lower bound {self.lower} is above upper bound {self.upper}")
        if self.max_length is not None and (
            isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1
        ):
            raise ValueError(f"parameter {self.name!r}: max_length must be a positive int or None")
        self._template: Template | None = None
        if self.template and (self.kind != "text" or isinstance(self.value, str)):  # (a non-text value fails below)
            self._template = self._parse_template()
        if self.kind == "code":
            # the original source: the shape every new version keeps, and what the code policy compares with
            try:
                self._original: FunctionShape = parse_function(self.value)
            except CodeShapeError as exc:
                raise InvalidValue(self.name, f"the initial value is not valid code: {exc}") from None
        else:  # the initial value must pass its own kind's rules (length and adapter checks excepted)
            getattr(self, f"_validate_{self.kind}")(self.value)

    def _parse_template(self) -> Template:
        if self.kind != "text":
            raise ValueError(f"parameter {self.name!r}: only a text parameter can be a template (kind {self.kind!r})")
        style = self.template if isinstance(self.template, str) else None
        try:
            parsed = Template.parse(self.value, style)
        except (TemplateError, ValueError) as exc:
            raise ValueError(f"parameter {self.name!r}: template={self.template!r}, but {exc}") from None
        if parsed is None:
            raise ValueError(
                f"parameter {self.name!r}: template={self.template!r}, but its value has no placeholder "
                f"({', '.join(STYLE_NAMES.values())}); drop template= for a plain text"
            )
        return parsed

    @property
    def template_model(self) -> Template | None:
        """The parsed template of a ``template=`` parameter (its original placeholders), else ``None``."""
        return self._template

    def current_template(self) -> Template | None:
        """The template of the current value (what the program fills in now), else ``None``.

        `template_model` keeps the original (its placeholders are the constraint); provenance must
        match the texts the program sends *now*, after the optimizer rewrote the literal parts.
        """
        if self._template is None or not isinstance(self.value, str):
            return None
        if self.value == self._template.text:
            return self._template
        cached: tuple[str, Template | None] | None = getattr(self, "_current", None)
        if cached is not None and cached[0] == self.value:
            return cached[1]
        try:
            current = Template.parse(self.value, self._template.style)
        except (TemplateError, ValueError):
            current = None
        self._current = (self.value, current)
        return current

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
            shape = self._original
            prefix = "async def" if shape.is_async else "def"
            parts.append(
                f"Python source of one function; keep the line `{prefix} {shape.name}{shape.signature}:`"
                + (f" and its decorators {list(shape.decorators)}" if shape.decorators else "")
            )
        elif self.kind == "json":
            parts.append(f"a JSON {type(self.value).__name__ if self.value is not None else 'value'}")
        elif self._template is not None:
            template = self._template
            parts.append(
                f"text, a {STYLE_NAMES[template.style]} template the program fills in: keep the placeholders "
                f"{', '.join(template.source_of(n) for n in template.placeholders)} and add no other"
            )
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
        if self._template is not None:
            spec["template"] = {"style": self._template.style, "placeholders": list(self._template.placeholders)}
        spec["constraint"] = self.constraint()
        return spec

    def copy(self, **changes: Any) -> Parameter:
        """A new parameter with ``changes``; a code parameter keeps its original (the policy's baseline)."""
        values = {
            key: getattr(self, key)
            for key in (
                "name",
                "kind",
                "value",
                "trainable",
                "description",
                "lower",
                "upper",
                "choices",
                "max_length",
                "code_policy",
                "origin",
                "template",
            )
        }
        values.update(changes)
        keep_template = self._template is not None and values["template"] == self.template
        copied = Parameter(
            **{**values, "template": False} if keep_template else values, checks=list(self.checks), meta=dict(self.meta)
        )
        if keep_template and copied.kind == "text":  # a template keeps its original placeholders, as code its shape
            copied.template, copied._template = self.template, self._template
            copied._validate_text(copied.value)
        if self.kind == "code" and copied.kind == "code":
            copied._original = self._original
        return copied

    # ----- validating -----------------------------------------------------------------
    def validate(self, value: Any) -> Any:
        """Return the accepted value, or raise `InvalidValue` saying why it is rejected.

        Whatever the value (a 400-digit number, JSON nested 2,000 deep, a lone surrogate), the
        outcome is the value or `InvalidValue` with a reason: never another exception.
        """
        try:
            if self.kind in ("text", "code") and isinstance(value, str):
                self._within_length(value)  # first: a 2 MB value is not even parsed
            surrogate = lone_surrogate(value) if isinstance(value, (str, list, dict)) else None
            if surrogate is not None:
                raise self._fail(
                    f"the value contains a lone surrogate ({surrogate}), which is not valid Unicode "
                    "text and cannot be sent or saved; write the character itself"
                )
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
        except (OverflowError, RecursionError, MemoryError) as exc:  # a check that met an extreme value
            raise InvalidValue(
                self.name,
                f"the value is too large or too deeply nested to check "
                f"({type(exc).__name__}); give a plain, smaller value",
            ) from None

    def _fail(self, reason: str) -> InvalidValue:
        return InvalidValue(self.name, reason)

    def _validate_text(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._fail(f"expected text (a string), got {type(value).__name__} {_short(value)}")
        if self._template is not None:
            problems = check_placeholders(self._template, value)
            if problems:
                raise self._fail("; ".join(problems))
        return value

    def _within_length(self, value: str) -> str:
        if self.max_length is not None and len(value) > self.max_length:
            raise self._fail(
                f"the value has {len(value)} characters, over this parameter's limit of "
                f"{self.max_length}: write a shorter one"
            )
        return value

    def _number(self, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if len(text) > 400:
                raise self._fail(f"expected {_article(self.kind)}, got a string of {len(text)} characters")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise self._fail(f"expected {_article(self.kind)}, got the string {_short(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(f"expected {_article(self.kind)}, got {type(value).__name__} {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self._fail(f"expected a finite {self.kind}, got {value}")
        if isinstance(value, int) and abs(value) > MAX_INT and (self.kind == "int" or value.bit_length() > 1024):
            digits = len(str(abs(value))) if value.bit_length() < 10_000 else "thousands of"
            raise self._fail(
                f"the number has {digits} digits: out of range for {_article(self.kind)} "
                f"(at most {MAX_INT if self.kind == 'int' else '1.8e308'} in magnitude)"
            )
        return value

    def _bounded(self, value: _Number) -> _Number:
        if self.lower is not None and value < self.lower:
            raise self._fail(f"{value} is below the lower bound {self.lower}")
        if self.upper is not None and value > self.upper:
            raise self._fail(f"{value} is above the upper bound {self.upper}")
        return value

    def _validate_float(self, value: Any) -> float:
        number = self._number(value)
        try:
            converted = float(number)
        except OverflowError:
            raise self._fail("the number is out of range for a float (at most about 1.8e308 in magnitude)") from None
        return self._bounded(converted)

    def _validate_int(self, value: Any) -> int:
        number = self._number(value)
        if isinstance(number, float):
            if not number.is_integer():
                raise self._fail(f"expected an int, got {number} (not a whole number)")
            number = int(number)
        return self._bounded(int(number))

    def _validate_choice(self, value: Any) -> Any:
        choices = self.choices or []
        if value in choices:
            return choices[choices.index(value)]
        if isinstance(value, str):  # "0.5" for a numeric choice, or a quoted string
            try:
                parsed = ast.literal_eval(value.strip()) if len(value) <= 1000 else None
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                parsed = None
            if parsed is not None and parsed in choices:
                return choices[choices.index(parsed)]
        raise self._fail(f"{_short(value)} is not one of the choices {json.dumps(choices)}")

    def _validate_json(self, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(self.value, str):
            if text_depth(value) > MAX_JSON_DEPTH:
                raise self._fail(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels; give a flatter value")
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    raise self._fail(f"expected JSON, got text that does not parse: {_short(value)}") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise self._fail(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels; give a flatter value")
        try:
            value = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise self._fail(f"not JSON-serialisable: {str(exc)[:200]}") from None
        if self.value is not None and not _same_json_type(self.value, value):
            raise self._fail(f"expected a JSON {_json_type(self.value)}, got a JSON {_json_type(value)}")
        return value

    def _validate_code(self, value: Any) -> str:
        """Shape and code policy, on the syntax tree only: nothing is compiled or run here.

        The policy runs before the adapter's ``checks`` (which may compile the code), so code it
        rejects never reaches them.
        """
        if not isinstance(value, str):
            raise self._fail(f"expected Python source code (a string), got {type(value).__name__}")
        namespace = namespace_of(self.origin) if self.origin is not None else None
        CodePolicy.of(self.code_policy).check(value, self._original, self.name, namespace=namespace)
        return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _same_json_type(old: Any, new: Any) -> bool:
    return _json_type(old) == _json_type(new)


def _short(value: Any, limit: int = 80) -> str:
    return safe_repr(value, limit)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"
