"""Prompts built in code: the texts a function hands to a model, read from its syntax tree.

Tutorials teach agents whose prompt is no template object at all but Python: a module constant
formatted per call (``SystemMessage(SYSTEM.format(company=c))``), an f-string in the node, ``%``,
``+`` of constants, a local alias, a template built inside the function, or a middleware that
returns the text. Such a prompt is as much a parameter as a template object; this module finds
it, framework-free, so that every adapter finds the same things the same way.

`prompts_in_function(fn, sinks)` parses ``fn``'s source (nothing is run) and follows each
expression that reaches a *sink* (a call argument that is a message's text, e.g.
``SystemMessage(content=...)``; a ``("system", TEXT)`` tuple; a ``{"role": ..., "content": TEXT}``
dict; a returned value, for middleware) back to where its text lives:

- a **module global** or a **closure variable** holding a string (or a message object, when the
  caller's ``text_of`` gives its text): bound to that variable (`VariableBinding`). A name that the
  code ``.format``s or ``%``-formats is a template (``style`` "format" or "printf");
- a **literal in the code**: a string constant, an f-string, a ``+`` of constants and values. Its
  template is the constant text with one placeholder per value (``f"Hi {state['user']}"`` reads
  ``"Hi {user}"``). Bound to the function's code (`LiteralBinding`): a new text is put into the
  syntax tree as string constants (never as code), the function is compiled like the original
  (`opto_core.kernel.code.compile_like`) and its ``__code__`` replaced, so every holder of the
  function object (a graph node, a tool) runs the new text on its next call;
- a **local alias** (``template = SYSTEM``, ``text = SYSTEM.format(...)``) assigned once in the
  function: followed to its value;
- a **helper of yours** called there (``SystemMessage(build_system(state))``, a module function or a
  closure variable whose source is not in the standard library nor an installed package): its
  return value is followed the same way, in its own code (`user_function` says which functions
  count; a helper's helpers are followed up to `_ALIAS_DEPTH` calls deep).

A placeholder's name comes from the expression it stands for: ``company`` for ``company``,
``state["company"]`` or ``cfg.company``; the expression's format spec and conversion stay in the
code. Lambdas are read (their variables are found) but their literals are not rewritten: a
lambda's source is not a function definition that can be recompiled.
"""

from __future__ import annotations

import ast
import copy
import inspect
import os
import string
import sysconfig
import threading
import types
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from opto_core.kernel.binding import Binding
from opto_core.kernel.code import SourceUnavailable, compile_like, function_source, unwrap
from opto_core.kernel.provenance import MIN_TEXT
from opto_core.kernel.templates import Template, TemplateError

__all__ = ["CodePrompt", "LiteralBinding", "Sink", "VariableBinding", "prompts_in_function", "user_function"]

#: Role names recognised in ``(role, TEXT)`` tuples and ``{"role": role, "content": TEXT}`` dicts.
ROLES = frozenset({"system", "developer", "human", "user", "ai", "assistant"})
#: Where a literal stands in a function's original source: (line, column, end line, end column).
Site = tuple[int, int, int, int]
#: How deep local aliases and helpers are followed (``a = b``; ``b = SYSTEM.format(...)``; ``b = helper()``).
_ALIAS_DEPTH = 4
#: Where the standard library and installed packages live: functions there are nobody's prompt helpers.
_LIBRARY_PATHS = tuple(
    sorted(
        {
            os.path.realpath(path) + os.sep
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(key))
        }
    )
)


def user_function(value: Any) -> bool:
    """Whether ``value`` is a plain Python function of the user's program (a helper whose return value is read).

    Functions of the standard library and of installed packages (a framework's) are left alone:
    their literals are not the user's prompts, and must never be rewritten.
    """
    if not isinstance(value, types.FunctionType):
        return False
    try:
        path = inspect.getsourcefile(value)
    except TypeError:
        return False
    if not path:
        return False
    return not os.path.realpath(path).startswith(_LIBRARY_PATHS)


@dataclass(frozen=True)
class Sink:
    """A call that takes a prompt text: the callee's name and where the text is among its arguments.

    ``callee`` is the name called (``SystemMessage``), a method's name (``from_template``) or
    both (``SystemMessagePromptTemplate.from_template``, which wins over the bare method name);
    ``args`` are positions and keywords that hold the text; ``role`` names the message's role;
    ``renders`` says that the framework itself fills the text's ``{placeholders}`` (a template
    object such as ``PromptTemplate.from_template``), so a constant there is a template too.
    ``receiver``: for a method that many objects have (``invoke``), the call counts only when it
    is made on a module global or closure variable for which ``receiver(value)`` is true.
    """

    callee: str
    args: tuple[int | str, ...] = (0, "content")
    role: str | None = None
    renders: bool = False
    receiver: Callable[[Any], bool] | None = field(default=None, compare=False)


@dataclass
class CodePrompt:
    """One prompt found in a function: where its text lives, its current text and how it is used."""

    name: str  # the variable's name, or "<role>_prompt" for a literal in the code
    value: str  # the text now (a template when ``style`` is set)
    style: str | None  # "format" ({name}), "printf" (%(name)s, %s) or None (plain text)
    binding: Binding
    how: str  # "constant", ".format()", "% formatting", "f-string", "+ of constants", "returned"
    role: str | None = None
    placeholders: dict[str, str] = field(default_factory=dict)  # placeholder -> the expression it stands for
    obj: Any = None  # the object the function passes on (a variable's value), for identity matching
    #: the sink call's receiver, when it is a global or closure variable (``agent`` in
    #: ``agent.update_system_message(...)``), and the call's ``name`` (``AssistantAgent("writer", ...)``)
    receiver: Any = None
    call_name: str | None = None

    @property
    def template(self) -> str | bool:
        """What ``Parameter(template=...)`` takes: the style when the text has placeholders in it, else False.

        A template parameter keeps its placeholders (the code fills each one) and is credited where
        its filled-in text went (`opto_core.kernel.provenance`)."""
        if self.style is None:
            return False
        try:
            parsed = Template.parse(self.value, self.style)
        except (TemplateError, ValueError):
            return False
        return self.style if parsed is not None else False

    def describe(self, function_name: str) -> str:
        """One line for the parameter's description: what the text is and how the code uses it."""
        where = self.binding.describe()
        text = f"prompt text that {function_name} builds ({self.how}; {where})"
        if self.placeholders:
            text += "; placeholders stand for " + ", ".join(f"{{{k}}} = {v}" for k, v in self.placeholders.items())
        return text


# ----- where the text lives ------------------------------------------------------------------------
@dataclass
class VariableBinding(Binding):
    """A module global (the function's own ``__globals__``) or a closure cell holding a prompt.

    After ``from prompts import SYSTEM`` the copy in the function's module is the one it reads, so
    that is the one written. A variable holding an object with a text (a message) is rebuilt by
    ``with_text(obj, text)``; ``text_of(obj)`` reads it.
    """

    home: Any  # a globals dict or a cell
    name: str
    text_of: Callable[[Any], str | None] | None = field(default=None, repr=False)
    with_text: Callable[[Any, str], Any] | None = field(default=None, repr=False)

    def raw(self) -> Any:
        """The object the function passes on (its identity is how a model call is matched to it)."""
        return self.home[self.name] if isinstance(self.home, dict) else self.home.cell_contents

    def _set_raw(self, obj: Any) -> None:
        if isinstance(self.home, dict):
            self.home[self.name] = obj
        else:
            self.home.cell_contents = obj

    def read(self) -> str:
        obj = self.raw()
        if isinstance(obj, str):
            return obj
        text = self.text_of(obj) if self.text_of is not None else None
        return text if text is not None else str(obj)

    def write(self, value: str) -> None:
        obj = self.raw()
        if isinstance(obj, str) or self.with_text is None:
            self._set_raw(value)
        else:
            self._set_raw(self.with_text(obj, value))

    def save(self) -> Any:
        return self.raw()

    def load(self, state: Any) -> None:
        self._set_raw(state)

    def describe(self) -> str:
        where = "module global" if isinstance(self.home, dict) else "closure variable"
        return f"the {where} {self.name!r}"


class FunctionText:
    """The string literals of one function that are parameters, and recompiling it with new texts.

    Shared by every `LiteralBinding` of the function, so that two literals changed one after the
    other both stay changed. The function object is kept: only its ``__code__`` is replaced, so
    whatever holds it (a LangGraph node, a tool, a bound method) runs the new code.
    """

    _BY_FUNCTION: weakref.WeakKeyDictionary[types.FunctionType, FunctionText] = weakref.WeakKeyDictionary()
    _LOCK = threading.Lock()

    def __init__(self, function: types.FunctionType, source: str) -> None:
        self._function: weakref.ref[types.FunctionType] = weakref.ref(function)
        self.qualname = function.__qualname__
        self.source = source  # the original source: sites are positions in it
        self.original_code = function.__code__
        self.texts: dict[Site, tuple[str, str]] = {}  # site -> (original text, current text)
        self.sites: dict[Site, _Literal] = {}

    @property
    def function(self) -> types.FunctionType:
        function = self._function()
        if function is None:
            raise RuntimeError(f"the function {self.qualname} no longer exists")
        return function

    @classmethod
    def known(cls, function: types.FunctionType) -> FunctionText | None:
        """The literals of ``function`` already found (its code may have been rewritten since)."""
        with cls._LOCK:
            return cls._BY_FUNCTION.get(function)

    @classmethod
    def of(cls, function: types.FunctionType, source: str) -> FunctionText:
        with cls._LOCK:
            known = cls._BY_FUNCTION.get(function)
            if known is None:
                known = cls._BY_FUNCTION[function] = cls(function, source)
            return known

    def add(self, literal: _Literal) -> None:
        self.sites.setdefault(literal.site, literal)
        self.texts.setdefault(literal.site, (literal.template, literal.template))

    def current(self, site: Site) -> str:
        return self.texts[site][1]

    def set(self, site: Site, text: str) -> None:
        original, _ = self.texts[site]
        self.texts[site] = (original, text)
        self._recompile()

    def _recompile(self) -> None:
        if all(original == current for original, current in self.texts.values()):
            _set_code(self.function, self.original_code)
            return
        tree = ast.parse(self.source)
        replacements = {
            site: self.sites[site].rebuilt(current)
            for site, (original, current) in self.texts.items()
            if original != current
        }

        class _Replace(ast.NodeTransformer):
            def visit(self, node: ast.AST) -> Any:
                site = _site(node) if isinstance(node, (ast.Constant, ast.JoinedStr, ast.BinOp)) else None
                if site in replacements:
                    return ast.copy_location(replacements.pop(site), node)
                return self.generic_visit(node)

        new_tree = ast.fix_missing_locations(_Replace().visit(tree))
        if replacements:
            raise RuntimeError(
                f"the literal(s) at {sorted(replacements)} of {self.qualname} were not found again in its source"
            )
        function = self.function
        compiled = compile_like(ast.unparse(new_tree), function, label=f"prompt in {self.qualname}")
        if compiled.__code__.co_freevars != self.original_code.co_freevars:
            raise RuntimeError(
                f"recompiling {self.qualname} changed its closure variables "
                f"({self.original_code.co_freevars} -> {compiled.__code__.co_freevars})"
            )
        _set_code(function, compiled.__code__)


def _set_code(function: Any, code: types.CodeType) -> None:
    """Give ``function`` another code object (the function object, and whoever holds it, stay)."""
    function.__code__ = code


@dataclass
class LiteralBinding(Binding):
    """A string literal (constant, f-string, ``+`` of constants) in a function's code."""

    text: FunctionText
    site: Site

    def read(self) -> str:
        return self.text.current(self.site)

    def write(self, value: str) -> None:
        self.text.set(self.site, value)

    def verify(self, value: str) -> None:
        if self.text.current(self.site) != value:
            raise RuntimeError(f"{self.describe()} still reads its old text")

    def save(self) -> Any:
        return self.text.current(self.site)

    def describe(self) -> str:
        return f"a literal on line {self.site[0]} of {self.text.qualname}'s source"


# ----- literals: their template, and the syntax that puts a new template back -----------------------
@dataclass
class _Literal:
    """A literal site: the template it reads as, and the expressions its placeholders stand for."""

    site: Site
    template: str
    style: str | None
    how: str
    values: dict[str, ast.expr] = field(default_factory=dict)  # placeholder -> expression (f-string, +)
    as_fstring: bool = False

    def rebuilt(self, template: str) -> ast.expr:
        """The syntax for a new template: a string constant, or an f-string over the same expressions.

        Text goes in as ``ast.Constant`` values only, so a suggestion can never become code.
        """
        if not self.as_fstring:
            return ast.Constant(template)
        parts: list[ast.expr] = []
        for literal, name, _spec, _conversion in string.Formatter().parse(template):
            if literal:
                parts.append(ast.Constant(literal))
            if name is None:
                continue
            if name not in self.values:
                raise ValueError(
                    f"unknown placeholder {{{name}}}: the code provides only "
                    + ", ".join("{" + n + "}" for n in self.values)
                )
            expression = copy.deepcopy(self.values[name])
            parts.append(expression)  # a FormattedValue, with its own spec and conversion
        return ast.JoinedStr(values=parts) if parts else ast.Constant("")


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _placeholder_base(expression: ast.expr) -> str:
    if isinstance(expression, ast.Name):
        return expression.id
    if isinstance(expression, ast.Attribute):
        return expression.attr
    if (
        isinstance(expression, ast.Subscript)
        and isinstance(expression.slice, ast.Constant)
        and isinstance(expression.slice.value, str)
        and expression.slice.value.isidentifier()
    ):
        return expression.slice.value
    if isinstance(expression, ast.Call):
        return _placeholder_base(expression.func) if not isinstance(expression.func, ast.Call) else "value"
    return "value"


class _Names:
    """Placeholder names for expressions: the same expression the same name, others made unique."""

    def __init__(self) -> None:
        self.by_source: dict[str, str] = {}
        self.used: set[str] = set()

    def name(self, expression: ast.expr) -> str:
        source = ast.unparse(expression)
        if source in self.by_source:
            return self.by_source[source]
        base = _placeholder_base(expression)
        name, k = base, 2
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        self.by_source[source] = name
        return name


def _site(node: ast.expr) -> Site:
    return (node.lineno, node.col_offset, node.end_lineno or node.lineno, node.end_col_offset or 0)


def _concat_operands(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _concat_operands(node.left) + _concat_operands(node.right)
    return [node]


def _formatted_literal(node: ast.JoinedStr | ast.BinOp) -> _Literal:
    """An f-string or a ``+`` chain as a template: its constants are the text, every value a placeholder.

    ``f"Hi {user}!"`` and ``"Hi " + user + "!"`` both read ``"Hi {user}!"``; a new template is put
    back as an f-string over the same expressions (for a ``+`` chain of strings that is the same).
    """
    names = _Names()
    text: list[str] = []
    values: dict[str, ast.expr] = {}

    def add(part: ast.expr) -> None:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            text.append(_escape(part.value))
        elif isinstance(part, ast.JoinedStr):
            for inner in part.values:
                add(inner)
        else:
            formatted = (
                part
                if isinstance(part, ast.FormattedValue)
                else ast.FormattedValue(value=part, conversion=-1, format_spec=None)
            )
            name = names.name(formatted.value)
            values[name] = formatted
            text.append("{" + name + "}")

    for part in node.values if isinstance(node, ast.JoinedStr) else _concat_operands(node):
        add(part)
    how = "f-string" if isinstance(node, ast.JoinedStr) else "+ of constants"
    return _Literal(_site(node), "".join(text), "format", how, values, True)


def _call_name(call: ast.Call) -> str | None:
    """A constructor's ``name`` argument when it is a constant (``AssistantAgent("writer", ...)``)."""
    for keyword in call.keywords:
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
            return keyword.value.value
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def _rendering_style(call: ast.Call) -> str:
    """The template style a framework call renders its text in: ``template_format=`` or str.format."""
    for keyword in call.keywords:
        if keyword.arg == "template_format" and isinstance(keyword.value, ast.Constant):
            return "jinja" if keyword.value.value in ("jinja2", "mustache") else "format"
    return "format"


def _literal_text(template: str) -> str:
    """A template's constant text (placeholders removed), to tell a prompt from a stray short string."""
    try:
        return "".join(literal for literal, *_ in string.Formatter().parse(template))
    except ValueError:
        return template


# ----- reading a function ---------------------------------------------------------------------------
class _Reader:
    def __init__(
        self,
        function: types.FunctionType,
        tree: ast.AST,
        source: str,
        sinks: Iterable[Sink],
        returns: bool,
        text_of: Callable[[Any], str | None] | None,
        with_text: Callable[[Any, str], Any] | None,
        *,
        return_role: str | None = "system",
        visiting: frozenset[int] = frozenset(),
    ) -> None:
        self.function = function
        self.return_role = return_role
        self.visiting = visiting | {id(function)}  # helpers being read (a recursive helper is read once)
        self.tree = tree
        self.source = source
        self.sinks = {s.callee: s for s in sinks}
        self.returns = returns
        self.text_of = text_of
        self.with_text = with_text
        code = function.__code__
        self.cells = dict(zip(code.co_freevars, function.__closure__ or ()))
        self.global_names = set(code.co_names)
        self.is_lambda = function.__name__ == "<lambda>"
        self.locals = self._single_assignments(tree)
        self.found: dict[Any, CodePrompt] = {}
        self.sink: tuple[Any, str | None] = (None, None)  # the current sink call's receiver and name

    @staticmethod
    def _single_assignments(tree: ast.AST) -> dict[str, ast.expr]:
        """Local names assigned exactly once, by a plain ``name = expr`` (aliases that can be followed)."""
        counts: dict[str, int] = {}
        values: dict[str, ast.expr] = {}
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.With):
                targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr)):
                targets = [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        counts[name.id] = counts.get(name.id, 0) + 1
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                values[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                values[node.target.id] = node.value
        return {name: value for name, value in values.items() if counts.get(name) == 1}

    # ----- sinks -------------------------------------------------------------------------------------
    def sink_of(self, call: ast.Call) -> Sink | None:
        func = call.func
        if isinstance(func, ast.Name):
            return self.sinks.get(func.id)
        if not isinstance(func, ast.Attribute):
            return None
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        sink = self.sinks.get(f"{owner}.{func.attr}") if owner else None
        if sink is None:
            sink = self.sinks.get(func.attr)
        if sink is not None and sink.receiver is not None:
            found, value = self.lookup(owner) if owner else (False, None)
            if not found or not sink.receiver(value):
                return None
        return sink

    def receiver_of(self, call: ast.Call) -> Any:
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            found, value = self.lookup(func.value.id)
            return value if found else None
        return None

    def lookup(self, name: str) -> tuple[bool, Any]:
        """(found, value) of a closure variable or module global the function reads."""
        if name in self.cells:
            try:
                return True, self.cells[name].cell_contents
            except ValueError:
                return False, None
        if name in self.global_names and name in self.function.__globals__:
            return True, self.function.__globals__[name]
        return False, None

    def sink_expressions(self) -> Iterator[tuple[ast.expr, str | None, str | None, bool, Any, str | None]]:
        """(expression, role, the style the framework renders it in, only a message object counts,
        the call's receiver, the call's name argument) for every sink."""
        calls: list[tuple[ast.Call, Sink]] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                sink = self.sink_of(node)
                if sink is not None:
                    calls.append((node, sink))
        rendered: dict[int, str] = {}  # (role, TEXT) tuples inside a call that renders them (from_messages)
        for node, sink in calls:
            style = _rendering_style(node) if sink.renders else None
            if style is not None:
                rendered.update(
                    (id(t), style)
                    for arg in (*node.args, *(k.value for k in node.keywords))
                    for t in ast.walk(arg)
                    if isinstance(t, ast.Tuple)
                )
            role = sink.role
            for keyword in node.keywords:
                if keyword.arg == "role" and isinstance(keyword.value, ast.Constant):
                    role = str(keyword.value.value)
            receiver = self.receiver_of(node)
            name = _call_name(node)
            for spec in sink.args:
                if isinstance(spec, int) and spec < len(node.args):
                    yield node.args[spec], role, style, False, receiver, name
                elif isinstance(spec, str):
                    yield from ((k.value, role, style, False, receiver, name) for k in node.keywords if k.arg == spec)
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Tuple)
                and len(node.elts) == 2
                and isinstance(node.elts[0], ast.Constant)
                and node.elts[0].value in ROLES
            ):
                yield node.elts[1], str(node.elts[0].value), rendered.get(id(node)), False, None, None
            elif isinstance(node, ast.Dict):
                entries = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
                role_node = entries.get("role")
                if isinstance(role_node, ast.Constant) and "content" in entries:
                    yield entries["content"], str(role_node.value), None, False, None, None
            elif isinstance(node, (ast.List, ast.Tuple)):
                for element in node.elts:  # [SYSTEM_MESSAGE, *messages]: a message object kept in a variable
                    if isinstance(element, ast.Name):
                        yield element, None, None, True, None, None
            elif isinstance(node, ast.Return) and self.returns and node.value is not None:
                yield node.value, self.return_role, None, False, None, None
            elif isinstance(node, ast.Lambda) and self.returns and self.is_lambda:
                yield node.body, self.return_role, None, False, None, None  # a lambda's body is what it returns

    # ----- following an expression to its text ----------------------------------------------------
    def follow(
        self,
        expression: ast.expr,
        role: str | None,
        renders: str | None,
        object_only: bool,
        style: str | None = None,
        how: str | None = None,
        depth: int = 0,
    ) -> None:
        if isinstance(expression, ast.Name):
            name = expression.id
            if name in self.locals and depth < _ALIAS_DEPTH:
                self.follow(self.locals[name], role, renders, object_only, style, how, depth + 1)
                return
            self.variable(name, role, renders, object_only, style, how)
            return
        if object_only:
            return
        if isinstance(expression, ast.IfExp):  # A if cond else B: either may be the prompt
            for branch in (expression.body, expression.orelse):
                self.follow(branch, role, renders, object_only, style, how, depth)
        elif isinstance(expression, ast.Call) and isinstance(expression.func, ast.Name):
            self.helper(expression.func.id, role, depth)
        elif (
            isinstance(expression, ast.Call)
            and isinstance(expression.func, ast.Attribute)
            and expression.func.attr == "format"
        ):
            self.follow(expression.func.value, role, None, False, "format", ".format()", depth)
        elif isinstance(expression, ast.BinOp) and isinstance(expression.op, ast.Mod):
            self.follow(expression.left, role, None, False, "printf", "% formatting", depth)
        elif isinstance(expression, ast.JoinedStr):
            self.literal(_formatted_literal(expression), role)
        elif isinstance(expression, ast.BinOp) and isinstance(expression.op, ast.Add):
            operands = _concat_operands(expression)
            if any(isinstance(o, (ast.Constant, ast.JoinedStr)) for o in operands):
                self.literal(_formatted_literal(expression), role)
            for operand in operands:  # module constants joined together: each one its own prompt
                if isinstance(operand, ast.Name):
                    self.follow(operand, role, None, False, None, "+ of constants", depth + 1)
        elif isinstance(expression, ast.Constant) and isinstance(expression.value, str):
            template_style = style or renders
            self.literal(
                _Literal(
                    _site(expression), expression.value, template_style, how or ("template" if renders else "constant")
                ),
                role,
            )

    def helper(self, name: str, role: str | None, depth: int) -> None:
        """A helper of the user's (`user_function`) called where a prompt goes: what it returns is the prompt."""
        known, value = self.lookup(name)
        if not known or depth >= _ALIAS_DEPTH or not user_function(value) or id(value) in self.visiting:
            return
        reader = _read(
            value,
            self.sinks.values(),
            True,
            self.text_of,
            self.with_text,
            return_role=role,
            visiting=self.visiting,
            depth=depth + 1,
        )
        if reader is None:
            return
        for key, prompt in reader.found.items():
            if prompt.receiver is None and prompt.call_name is None:
                prompt.receiver, prompt.call_name = self.sink
            self.found.setdefault(("helper", id(value), key), prompt)

    def variable(
        self, name: str, role: str | None, renders: str | None, object_only: bool, style: str | None, how: str | None
    ) -> None:
        known, value = self.lookup(name)
        if not known:
            return  # a parameter or a local built per call: nothing to bind
        home: Any = self.cells[name] if name in self.cells else self.function.__globals__
        text = value if isinstance(value, str) else self.text_of(value) if self.text_of is not None else None
        if not isinstance(text, str) or not text.strip() or (object_only and isinstance(value, str)):
            return
        key = (id(home), name)
        if key in self.found:
            return
        binding = VariableBinding(home, name, self.text_of, self.with_text)
        template_style = style or (renders if isinstance(value, str) else None)
        self.found[key] = CodePrompt(
            name,
            text,
            template_style,
            binding,
            how or "constant",
            role,
            obj=value,
            receiver=self.sink[0],
            call_name=self.sink[1],
        )

    def literal(self, literal: _Literal, role: str | None) -> None:
        if self.is_lambda or len(_literal_text(literal.template).strip()) < MIN_TEXT:
            return  # a lambda cannot be recompiled; a literal without real text is no prompt
        key = ("literal", literal.site)
        if key in self.found:
            return
        text = FunctionText.of(self.function, self.source)
        text.add(literal)
        label = f"{role}_prompt" if role else "prompt"
        placeholders = {
            name: ast.unparse(value.value if isinstance(value, ast.FormattedValue) else value)
            for name, value in literal.values.items()
        }
        self.found[key] = CodePrompt(
            label,
            text.current(literal.site),
            literal.style,
            LiteralBinding(text, literal.site),
            literal.how,
            role,
            placeholders,
            receiver=self.sink[0],
            call_name=self.sink[1],
        )


def _read(
    function: Any,
    sinks: Iterable[Sink],
    returns: bool,
    text_of: Callable[[Any], str | None] | None,
    with_text: Callable[[Any, str], Any] | None,
    *,
    return_role: str | None = "system",
    visiting: frozenset[int] = frozenset(),
    depth: int = 0,
) -> _Reader | None:
    """A reader that has followed every sink of ``function`` (None when its source is not available)."""
    try:
        base = unwrap(function)
        known = FunctionText.known(base)  # after a rewrite, sites are read in the original source
        source = known.source if known is not None else function_source(base)
        tree = ast.parse(source)
    except (SourceUnavailable, SyntaxError, ValueError):
        return None
    reader = _Reader(base, tree, source, sinks, returns, text_of, with_text, return_role=return_role, visiting=visiting)
    for expression, role, renders, object_only, receiver, call_name in reader.sink_expressions():
        reader.sink = (receiver, call_name)
        reader.follow(expression, role, renders, object_only, depth=depth)
    return reader


def prompts_in_function(
    function: Any,
    sinks: Iterable[Sink],
    *,
    returns: bool = False,
    text_of: Callable[[Any], str | None] | None = None,
    with_text: Callable[[Any, str], Any] | None = None,
) -> list[CodePrompt]:
    """The prompts ``function`` builds and hands to a sink, in the order its code names them.

    ``sinks`` are the calls that take a message's text (see `Sink`); ``returns=True`` counts the
    function's return value as a prompt too (a middleware that returns the system prompt).
    ``text_of(obj)`` gives the text of a non-string object a variable holds (a message), or None;
    ``with_text(obj, text)`` builds the same kind of object with a new text. Nothing is run; a
    function whose source is not available gives nothing. Two literals get distinct names
    (``system_prompt``, ``system_prompt_2``).
    """
    reader = _read(function, sinks, returns, text_of, with_text)
    if reader is None:
        return []
    prompts = list(reader.found.values())
    used: set[str] = set()
    for prompt in prompts:
        name, k = prompt.name, 2
        while name in used:
            name, k = f"{prompt.name}_{k}", k + 1
        used.add(name)
        prompt.name = name
    return prompts
