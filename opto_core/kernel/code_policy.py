"""The code policy: what an LLM-written function may do, checked on its syntax tree before it ever runs.

A ``code`` parameter lets the optimizer rewrite a function (a tool, a parser). The new source
comes from a model that reads text from the outside world (tool output, documents, user input),
so it is untrusted. The policy reads the parsed source (`opto_core.kernel.code.parse_function`) and
rejects, *without compiling or running anything*:

- a different name, signature or decorator list (`opto_core.kernel.code.same_shape`): a decorator is
  code that runs at definition time, so none may be added or changed;
- anything at module level but imports (and a docstring);
- the use of a denied import, builtin or attribute (process, file system, network, dynamic code,
  introspection escapes: `DENY_MODULES`, `DENY_BUILTINS`, dunder attributes);
- writes to objects the function does not own: assignments to attributes or items of non-local
  names (``RATE.value = 99.0``), mutating calls on them (``CONFIG.update(...)``), ``global`` and
  ``nonlocal``;

each **unless the original function already did the same** (an original that calls ``os.path``
may keep using ``os``). A rejection is an `InvalidValue` whose reason goes back to the optimizer
like any other invalid value.

Three settings: ``"strict"`` (the default: everything above), ``"permissive"`` (shape checks
only: name, signature, decorators, module-level statements), or a `CodePolicy` object with its
own ``allow``/``deny`` sets. Python is no sandbox: this stops the plain and the well-known
indirect ways, not a determined attacker (see docs/security.md for what it cannot stop).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from opto_core.kernel.code import CodeShapeError, FunctionShape, parse_function, same_shape
from opto_core.kernel.invalid import InvalidValue

#: Modules whose import (or use by name) gives process, file-system, network or interpreter access.
DENY_MODULES: frozenset[str] = frozenset({
    # processes and the interpreter
    "os", "posix", "nt", "subprocess", "_posixsubprocess", "multiprocessing", "pty", "signal", "sys", "gc",
    "builtins", "importlib", "imp", "runpy", "code", "codeop", "ctypes", "cffi", "marshal", "pickle", "_pickle",
    "shelve", "dill", "cloudpickle", "inspect", "traceback", "atexit", "resource", "threading", "_thread",
    "concurrent", "asyncio", "sysconfig", "site", "this", "antigravity", "webbrowser",
    # file system
    "io", "_io", "pathlib", "shutil", "tempfile", "glob", "fileinput", "zipfile", "tarfile", "mmap", "fcntl",
    "sqlite3", "dbm",
    # network
    "socket", "_socket", "ssl", "select", "selectors", "urllib", "urllib3", "http", "requests", "httpx",
    "httpx2", "aiohttp", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc", "socketserver",
    "openai",
})

#: Builtins that run or load code, touch files or the terminal, or reach into namespaces.
DENY_BUILTINS: frozenset[str] = frozenset({
    "eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars", "setattr", "delattr",
    "breakpoint", "input", "help", "exit", "quit", "memoryview", "__builtins__", "__loader__", "__spec__",
})

#: Attributes that reach frames and code objects without a dunder name.
DENY_ATTRIBUTES: frozenset[str] = frozenset({
    "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code", "cr_frame", "cr_code",
    "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code", "attrgetter", "methodcaller",
})

#: Dunder names that reveal nothing dangerous (every other ``__x__`` attribute or name is denied).
SAFE_DUNDERS: frozenset[str] = frozenset({
    "__name__", "__qualname__", "__doc__", "__class__", "__module__", "__init__", "__len__", "__iter__",
    "__next__", "__enter__", "__exit__", "__str__", "__repr__", "__eq__", "__hash__", "__call__",
    "__contains__", "__getitem__", "__add__", "__lt__",
})

#: Methods that change a container in place: called on a name the function does not own, they
#: write to another object (another parameter, module state).
MUTATING_METHODS: frozenset[str] = frozenset({
    "append", "extend", "insert", "pop", "popitem", "clear", "update", "setdefault", "remove", "discard", "add",
    "sort", "reverse", "__setitem__", "__delitem__",
})

_DUNDER = re.compile(r"__[A-Za-z0-9_]+__")
_BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class Use:
    """One thing a function does that the policy cares about: ``kind`` and the name involved."""

    kind: str  # "import", "name", "attribute", "string", "getattr", "write", "mutate", "global", "relative import"
    name: str
    line: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def describe(self) -> str:
        what = {
            "import": f"imports {self.name!r}",
            "relative import": "uses a relative import",
            "name": f"uses {self.name!r}",
            "attribute": f"uses the attribute {self.name!r}",
            "string": f"names the attribute {self.name!r} in a string",
            "getattr": f"reads an attribute by a computed name ({self.name})",
            "write": f"writes to an attribute or item of {self.name!r}, which the function does not own",
            "mutate": f"changes {self.name!r} in place, which the function does not own",
            "global": f"declares {self.name!r} global/nonlocal",
        }[self.kind]
        return f"line {self.line}: {what}" if self.line else what


@dataclass(frozen=True)
class CodePolicy:
    """What a suggested function may use that its original did not. See the module docstring.

    ``allow`` lists names exempt from the deny lists (modules, builtins, attributes: ``{"os", "open"}``);
    ``deny`` adds names to them. ``check_uses=False`` and ``check_writes=False`` leave only the shape
    checks (that is ``"permissive"``).
    """

    name: str = "strict"
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    check_uses: bool = True
    check_writes: bool = True
    deny_modules: frozenset[str] = field(default=DENY_MODULES, repr=False)
    deny_builtins: frozenset[str] = field(default=DENY_BUILTINS, repr=False)
    deny_attributes: frozenset[str] = field(default=DENY_ATTRIBUTES, repr=False)

    def __post_init__(self) -> None:
        for attribute in ("allow", "deny", "deny_modules", "deny_builtins", "deny_attributes"):
            value = getattr(self, attribute)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise TypeError(f"CodePolicy.{attribute} must be a set of names, got {value!r}")
            object.__setattr__(self, attribute, frozenset(value))

    # ----- the settings users pass ------------------------------------------------------------
    @classmethod
    def of(cls, policy: CodePolicy | str | None) -> CodePolicy:
        """``"strict"`` (or None), ``"permissive"``, or a `CodePolicy` as it is."""
        if policy is None or policy == "strict":
            return STRICT
        if policy == "permissive":
            return PERMISSIVE
        if isinstance(policy, CodePolicy):
            return policy
        raise ValueError(f"code_policy must be 'strict', 'permissive' or a CodePolicy, got {policy!r}")

    def with_changes(self, **changes: Any) -> CodePolicy:
        return replace(self, **changes)

    # ----- checking ---------------------------------------------------------------------------
    def check(self, source: Any, original: str | FunctionShape | None, parameter: str = "code") -> FunctionShape:
        """Parse ``source`` and check it against ``original``; return its shape or raise `InvalidValue`.

        Nothing is compiled to bytecode or run: only `ast.parse` and tree walks.
        """
        try:
            shape = parse_function(source)
            if original is not None:
                base = original if isinstance(original, FunctionShape) else parse_function(original)
                same_shape(base, shape)
            else:
                base = None
        except CodeShapeError as exc:
            raise InvalidValue(parameter, str(exc)) from None
        if not (self.check_uses or self.check_writes):
            return shape
        allowed = {use.key for use in uses(base)} if base is not None else set()
        problems = [use for use in self.violations(shape) if use.key not in allowed]
        if problems:
            problems.sort(key=lambda use: use.line)
            listed = "; ".join(self._describe(use) for use in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidValue(parameter, f"the code policy ({self.name}) rejects this code: {listed}{more}. "
                                          f"Rewrite the body without these; the original function did not need them")
        return shape

    def violations(self, shape: FunctionShape) -> list[Use]:
        """Every use in ``shape`` that this policy denies (before comparing with the original)."""
        found: list[Use] = []
        for use in uses(shape):
            if use.kind in ("write", "mutate", "global"):
                if self.check_writes:
                    found.append(use)
            elif self.check_uses and self._denied(use):
                found.append(use)
        return found

    def _describe(self, use: Use) -> str:
        return use.describe()

    def _denied(self, use: Use) -> bool:
        name = use.name
        if name in self.allow:
            return False
        if name in self.deny:
            return True
        if use.kind == "import":
            root = name.split(".")[0]
            return root in self.deny_modules or root in self.deny
        if use.kind == "relative import" or use.kind == "getattr":
            return True
        if use.kind == "name":
            return name in self.deny_modules or name in self.deny_builtins or _is_unsafe_dunder(name)
        if use.kind == "attribute":
            return name in self.deny_attributes or _is_unsafe_dunder(name)
        if use.kind == "string":
            return _is_unsafe_dunder(name)
        return False


STRICT = CodePolicy()
PERMISSIVE = CodePolicy("permissive", check_uses=False, check_writes=False)


def _is_unsafe_dunder(name: str) -> bool:
    return bool(_DUNDER.fullmatch(name)) and name not in SAFE_DUNDERS


# ----- reading what a function does ------------------------------------------------------------------
def uses(shape: FunctionShape) -> list[Use]:
    """What the function (with its module-level imports) imports, names, reads and writes."""
    local = _local_names(shape.function)
    found: list[Use] = []
    for node in ast.walk(shape.tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found.extend(Use("import", alias.name, line) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(Use("relative import", "." * node.level + (node.module or ""), line))
            elif node.module == "builtins":  # `from builtins import str as int`: judged name by name
                found.extend(Use("name", alias.name, line) for alias in node.names)
            else:
                found.append(Use("import", node.module or "", line))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in local or _DUNDER.fullmatch(node.id):
                found.append(Use("name", node.id, line))
        elif isinstance(node, ast.Attribute):
            found.append(Use("attribute", node.attr, line))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.extend(Use("string", name, line) for name in _DUNDER.findall(node.value))
        elif isinstance(node, ast.Call):
            found.extend(_call_uses(node, local, line))
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.extend(Use("global", name, line) for name in node.names)
        for target in _write_targets(node):
            root = _root_name(target)
            if root is not None and root not in local:
                found.append(Use("write", root, line))
    docstrings = _docstring_nodes(shape.tree)
    return [use for use in found if not (use.kind == "string" and use.line in docstrings)]


def _call_uses(node: ast.Call, local: set[str], line: int) -> list[Use]:
    found: list[Use] = []
    func = node.func
    if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2:
        name = node.args[1]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            found.append(Use("getattr", f"{func.id} with a non-literal name", line))
        else:
            found.append(Use("attribute", name.value, line))
    if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
        root = _root_name(func.value)
        if root is not None and root not in local and root not in _BUILTIN_NAMES:
            found.append(Use("mutate", root, line))
    return found


def _write_targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = list(node.targets)
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        targets = [node.optional_vars]
    else:
        return []
    flat: list[ast.expr] = []
    while targets:
        target = targets.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            flat.append(target)
    return flat


def _root_name(node: ast.expr) -> str | None:
    """``RATE`` for ``RATE.value``, ``CONFIG["a"].b`` and ``RATE.meta.update``; None for ``f().x``."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _local_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names the function owns: its arguments and every name it binds (not those declared global)."""
    names: set[str] = set()
    declared: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not function:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, ast.MatchAs) and node.name:
            names.add(node.name)
    return names - declared


def _docstring_nodes(tree: ast.Module) -> set[int]:
    """Lines of docstrings (a dunder mentioned in a docstring is prose, not an access)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


# ----- setting it on parameters ------------------------------------------------------------------------
def apply_policy(parameters: Iterable[Any], policy: CodePolicy | str | None) -> int:
    """Set ``policy`` on every code parameter (the loop calls this with ``optimize(code_policy=...)``).

    Returns how many parameters got it. ``parameters`` may be a list or a `BoundParameters`.
    """
    chosen = CodePolicy.of(policy)
    count = 0
    for parameter in parameters:
        if getattr(parameter, "kind", None) == "code":
            parameter.code_policy = chosen
            count += 1
    return count
