"""The code policy: what an LLM-written function may do, checked on its syntax tree before it ever runs.

A ``code`` parameter lets the optimizer rewrite a function (a tool, a parser). The new source
comes from a model that reads text from the outside world (tool output, documents, user input),
so it is untrusted. The policy reads the parsed source (`opto_core.kernel.code.parse_function`)
and decides with an **allow-list**, not a deny-list (a deny-list misses aliases: ``posixpath.os``,
``typing.sys``, ``random._os``). A suggested body may use:

- the names its own code binds (arguments, locals), the builtins on `SAFE_BUILTINS`, the modules
  on `SAFE_MODULES` (their public, non-module attributes), and
- whatever **the original function** already used: its global names, its imports, and the exact
  attribute paths it took into other modules (``os.path.basename`` lets a new version use
  ``os.path.*`` functions, not ``os.system``).

Each of these is a route class that stays closed even when the original's names allow the start
of the path:

- a module reached as an attribute of another module or object (``posixpath.os``, ``json.decoder``),
  or a module used as a value (``m = os``), unless the original did the same;
- attribute names computed at run time (``getattr`` with a non-literal name or ``getattr`` passed
  around as a value, ``operator.attrgetter``, ``str.format`` with a non-literal format string);
- private and dunder attributes (``_os``, ``__globals__``), frame and code attributes, and a dunder
  spelled in a string;
- code outside the function body: anything at module level but imports and a docstring, a changed
  name, signature or decorator list, class definitions, decorators and computed defaults on inner
  functions, ``type()`` with three arguments, dunder methods;
- writes to objects the function does not own: assignments to attributes or items of non-local
  names (``RATE.value = 99.0``), in-place methods (``CONFIG.update(...)``, ``P.__init__(...)``),
  ``global`` and ``nonlocal``;
- hooks that outlive the call and exits (`HARD_DENY_*`): ``weakref``, ``atexit``, ``signal``,
  ``SystemExit``, ``KeyboardInterrupt``, ``sys.exit``, ``os._exit``... refused even when the original
  used them (only an explicit ``CodePolicy(allow=...)`` lets them through).

Nothing the suggestion wrote is compiled or run here: the policy parses, walks the tree, and reads
attributes of modules and objects the *original's* namespace holds with `inspect.getattr_static`
(no property or ``__getattr__`` runs). To tell a module from an object it may import a module of
`SAFE_MODULES` (standard library only). A rejection is an `InvalidValue` whose reason goes back to
the optimizer like any other invalid value.

Three settings: ``"strict"`` (the default: everything above), ``"permissive"`` (shape checks
only: name, signature, decorators, module-level statements), or a `CodePolicy` object with its
own ``allow``/``deny`` sets. Python is no sandbox: the policy is the first, cheap check; the box
around evaluations is the wall (docs/security.md).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import string
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from opto_core.kernel.code import CodeShapeError, FunctionShape, SourceUnavailable, parse_function, same_shape, unwrap
from opto_core.kernel.invalid import InvalidValue

#: Standard-library modules a suggested body may import and call into without the original having
#: done so (their public, non-module attributes; see the module docstring).
SAFE_MODULES: frozenset[str] = frozenset(
    {
        "__future__",
        "math",
        "cmath",
        "decimal",
        "fractions",
        "numbers",
        "statistics",
        "random",
        "re",
        "json",
        "string",
        "textwrap",
        "unicodedata",
        "difflib",
        "html",
        "base64",
        "hashlib",
        "csv",
        "datetime",
        "time",
        "itertools",
        "functools",
        "operator",
        "collections",
        "collections.abc",
        "heapq",
        "bisect",
        "copy",
        "typing",
        "ast",
        "urllib.parse",
    }
)

#: Builtins a suggested body may use (``getattr``/``hasattr`` only with a literal attribute name,
#: ``type`` only with one argument).
SAFE_BUILTINS: frozenset[str] = frozenset(
    {
        "abs",
        "aiter",
        "all",
        "anext",
        "any",
        "ascii",
        "bin",
        "bool",
        "bytearray",
        "bytes",
        "callable",
        "chr",
        "complex",
        "dict",
        "divmod",
        "enumerate",
        "filter",
        "float",
        "format",
        "frozenset",
        "getattr",
        "hasattr",
        "hash",
        "hex",
        "id",
        "int",
        "isinstance",
        "issubclass",
        "iter",
        "len",
        "list",
        "map",
        "max",
        "min",
        "next",
        "object",
        "oct",
        "ord",
        "pow",
        "print",
        "range",
        "repr",
        "reversed",
        "round",
        "set",
        "slice",
        "sorted",
        "str",
        "sum",
        "tuple",
        "type",
        "zip",
        "True",
        "False",
        "None",
        "NotImplemented",
        "Ellipsis",
        "Exception",
        "ArithmeticError",
        "AssertionError",
        "AttributeError",
        "EOFError",
        "IndexError",
        "KeyError",
        "LookupError",
        "NotImplementedError",
        "OverflowError",
        "RecursionError",
        "RuntimeError",
        "StopIteration",
        "StopAsyncIteration",
        "TimeoutError",
        "TypeError",
        "UnicodeError",
        "UnicodeDecodeError",
        "UnicodeEncodeError",
        "ValueError",
        "ZeroDivisionError",
        "ConnectionError",
        "Warning",
        "UserWarning",
    }
)

#: Modules refused even when the original used them: hooks that run after the call (at garbage
#: collection, at exit, on a signal), so a rollback cannot undo them.
HARD_DENY_MODULES: frozenset[str] = frozenset(
    {
        "weakref",
        "_weakref",
        "atexit",
        "signal",
        "_signal",
        "faulthandler",
        "_thread",
    }
)
#: Names refused even when the original used them: exits the loop must never see from a body.
HARD_DENY_NAMES: frozenset[str] = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit", "exit", "quit"})
#: Attributes refused even when the original used them: exits, tracing and interpreter hooks.
HARD_DENY_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "exit",
        "_exit",
        "abort",
        "kill",
        "killpg",
        "settrace",
        "setprofile",
        "addaudithook",
        "excepthook",
        "unraisablehook",
        "set_wakeup_fd",
        "alarm",
        "setitimer",
        "finalize",
        "register_at_fork",
    }
)
#: Dunder methods a body may never define (they run implicitly: at collection, at class creation).
HARD_DENY_METHODS: frozenset[str] = frozenset(
    {
        "__del__",
        "__init_subclass__",
        "__set_name__",
        "__class_getitem__",
        "__getattr__",
        "__getattribute__",
        "__setattr__",
        "__delattr__",
        "__reduce__",
        "__reduce_ex__",
        "__get__",
        "__set__",
        "__delete__",
    }
)

#: Attributes denied unless the original used them: frames and code objects, attribute getters by
#: name, evaluation of strings, and file and process methods of objects (``Path.write_text``).
DENY_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "ag_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "attrgetter",
        "methodcaller",
        "Formatter",
        "get_type_hints",
        "ForwardRef",
        "open",
        "write_text",
        "write_bytes",
        "unlink",
        "rmdir",
        "rmtree",
        "mkdir",
        "makedirs",
        "touch",
        "chmod",
        "chown",
        "symlink_to",
        "hardlink_to",
        "system",
        "popen",
        "spawnv",
        "fork",
        "execv",
        "execve",
        "load_module",
        "exec_module",
        "import_module",
        "literal_eval_unsafe",
    }
)

#: Attribute names that are modules the policy must not let a body reach on an object it cannot
#: resolve (``x.os``): denied unless the original used the same attribute.
MODULE_ATTRIBUTE_NAMES: frozenset[str] = frozenset(
    {
        "os",
        "posix",
        "nt",
        "posixpath",
        "ntpath",
        "genericpath",
        "sys",
        "subprocess",
        "_posixsubprocess",
        "builtins",
        "importlib",
        "imp",
        "runpy",
        "ctypes",
        "marshal",
        "pickle",
        "_pickle",
        "shutil",
        "socket",
        "_socket",
        "pathlib",
        "io",
        "_io",
        "codecs",
        "gzip",
        "bz2",
        "lzma",
        "zipfile",
        "tarfile",
        "logging",
        "threading",
        "_thread",
        "multiprocessing",
        "signal",
        "atexit",
        "weakref",
        "gc",
        "pty",
        "tempfile",
        "urllib",
        "urllib3",
        "httpx",
        "asyncio",
        "sqlite3",
        "timeit",
        "cProfile",
        "profile",
        "pdb",
        "pkgutil",
        "unittest",
    }
)

#: Dunder names that reveal nothing dangerous (every other ``__x__`` attribute or name is denied).
SAFE_DUNDERS: frozenset[str] = frozenset(
    {
        "__name__",
        "__qualname__",
        "__doc__",
        "__class__",
        "__module__",
        "__len__",
        "__iter__",
        "__next__",
        "__enter__",
        "__exit__",
        "__str__",
        "__repr__",
        "__eq__",
        "__hash__",
        "__contains__",
        "__getitem__",
        "__add__",
        "__lt__",
        "__future__",
    }
)

#: Methods that change an object in place: called on a name the function does not own, they write
#: to another object (another parameter, module state).
MUTATING_METHODS: frozenset[str] = frozenset(
    {
        "append",
        "extend",
        "insert",
        "pop",
        "popitem",
        "clear",
        "update",
        "setdefault",
        "remove",
        "discard",
        "add",
        "sort",
        "reverse",
        "__setitem__",
        "__delitem__",
        "__init__",
        "__setattr__",
        "__delattr__",
        "__setstate__",
        "__dict__",
        "__ior__",
        "__iadd__",
    }
)

_DUNDER = re.compile(r"__[A-Za-z0-9_]+__")
_MISSING = object()
_SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ClassDef,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


@dataclass(frozen=True)
class Use:
    """One thing a function does that the policy judges: ``kind``, the name involved, its line.

    ``also`` lists other keys whose presence in the original also allows this use (``from os import
    path`` is fine when the original used ``os.path``).
    """

    kind: str
    name: str
    line: int = 0
    also: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def describe(self) -> str:
        what = {
            "import": f"imports {self.name!r}",
            "from": f"imports {self.name!r}",
            "relative import": "uses a relative import",
            "star import": f"imports * from {self.name!r}",
            "name": f"uses {self.name!r}",
            "chain": f"uses {self.name!r}, which the original does not use",
            "module": f"reaches the module {self.name!r} through another module or object",
            "module value": f"uses the module {self.name!r} as a value (only its attributes may be used)",
            "attribute": f"uses the attribute {self.name!r}",
            "string": f"names {self.name!r} in a string",
            "getattr": f"reads an attribute by a computed name ({self.name})",
            "format": f"formats with a computed format string ({self.name})",
            "type": f"uses type() other than as type(x) ({self.name})",
            "class": f"defines the class {self.name!r}",
            "method": f"defines the method {self.name!r}",
            "decorator": f"decorates an inner function with {self.name!r}",
            "default": f"computes a default or annotation of an inner function ({self.name})",
            "write": f"writes to an attribute or item of {self.name!r}, which the function does not own",
            "mutate": f"changes {self.name!r} in place, which the function does not own",
            "global": f"declares {self.name!r} global/nonlocal",
        }[self.kind]
        return f"line {self.line}: {what}" if self.line else what


@dataclass(frozen=True)
class CodePolicy:
    """What a suggested function may use. See the module docstring.

    ``allow`` adds names to the allow-list (modules: ``{"os.path"}`` makes that module safe;
    builtins: ``{"open"}``; attributes; even the hard-denied hooks); ``deny`` removes names from it
    (``{"random"}``). ``check_uses=False`` and ``check_writes=False`` leave only the shape checks
    (that is ``"permissive"``).
    """

    name: str = "strict"
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    check_uses: bool = True
    check_writes: bool = True
    safe_modules: frozenset[str] = field(default=SAFE_MODULES, repr=False)
    safe_builtins: frozenset[str] = field(default=SAFE_BUILTINS, repr=False)
    deny_attributes: frozenset[str] = field(default=DENY_ATTRIBUTES, repr=False)

    def __post_init__(self) -> None:
        for attribute in ("allow", "deny", "safe_modules", "safe_builtins", "deny_attributes"):
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
    def check(
        self,
        source: Any,
        original: str | FunctionShape | None,
        parameter: str = "code",
        namespace: Mapping[str, Any] | None = None,
    ) -> FunctionShape:
        """Parse ``source`` and check it against ``original``; return its shape or raise `InvalidValue`.

        ``namespace`` holds the names the original function sees (its module globals and closure
        values): the policy reads it to tell modules from other objects. Nothing is compiled to
        bytecode or run: only `ast.parse`, tree walks and static attribute lookups.
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
        resolver = _Resolver(namespace, self)
        allowed: set[tuple[str, str]] = {use.key for use in uses(base, resolver)} if base is not None else set()
        problems = [
            use
            for use in self.violations(shape, resolver)
            if self._hard(use) or not (use.key in allowed or any(key in allowed for key in use.also))
        ]
        if problems:
            problems = sorted(set(problems), key=lambda use: (use.line, use.kind, use.name))
            listed = "; ".join(use.describe() for use in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidValue(
                parameter,
                f"the code policy ({self.name}) rejects this code: {listed}{more}. "
                f"Rewrite the body with what the original function uses, plain Python "
                f"and the modules {', '.join(sorted(self._safe_modules() - {'__future__'}))}",
            )
        return shape

    def violations(self, shape: FunctionShape, resolver: _Resolver | None = None) -> list[Use]:
        """Every use in ``shape`` that this policy denies (before comparing with the original)."""
        resolver = resolver or _Resolver(None, self)
        found: list[Use] = []
        for use in uses(shape, resolver):
            if use.kind in ("write", "mutate", "global"):
                if self.check_writes:
                    found.append(use)
            elif self.check_uses and self._denied(use):
                found.append(use)
        return found

    def _safe_modules(self) -> frozenset[str]:
        return (self.safe_modules | {name for name in self.allow if name.replace(".", "").isidentifier()}) - self.deny

    def is_safe_module(self, module: str) -> bool:
        return module in self._safe_modules()

    def _hard(self, use: Use) -> bool:
        """Denied even when the original did the same (only ``allow`` lets it through)."""
        name = use.name
        if name in self.allow or name in self.deny:
            return name in self.deny
        if use.kind in ("import", "from", "star import"):
            parts = name.split(".")
            return parts[0] in HARD_DENY_MODULES or any(_DUNDER.fullmatch(p) and p != "__future__" for p in parts)
        if use.kind == "name":
            return name in HARD_DENY_NAMES
        if use.kind == "attribute":
            return name in HARD_DENY_ATTRIBUTES
        if use.kind == "method":
            return name in HARD_DENY_METHODS
        if use.kind in ("chain", "module"):
            last = name.rsplit(".", 1)[-1]
            return last in HARD_DENY_ATTRIBUTES or name.split(".")[0] in HARD_DENY_MODULES or last in HARD_DENY_MODULES
        return False

    def _denied(self, use: Use) -> bool:
        name = use.name
        if name in self.deny:
            return True
        if name in self.allow:
            return False
        kind = use.kind
        if kind == "import":
            return not self.is_safe_module(name) or self._hard(use)
        if kind == "from":
            module, _, attribute = name.rpartition(".")
            return (
                not self.is_safe_module(module)
                or attribute.startswith("_")
                or attribute in self.deny
                or attribute in self.deny_attributes
                or self._hard(use)
            )
        if kind == "name":
            return (name not in self.safe_builtins and name not in SAFE_DUNDERS) or name in HARD_DENY_NAMES
        if kind == "attribute":
            return (
                name in self.deny_attributes
                or name in HARD_DENY_ATTRIBUTES
                or name.startswith("_")
                or name in MODULE_ATTRIBUTE_NAMES
                or any(part in self.deny for part in name.split("."))
            )
        if kind == "chain":
            return not self.is_safe_module(name) and not any(p in self.allow for p in _prefixes(name))
        if kind == "module":
            return not self.is_safe_module(name) and not any(
                prefix in self.allow for _, path in use.also for prefix in _prefixes(path)
            )
        if kind == "string":
            return name not in SAFE_DUNDERS
        return kind not in ("write", "mutate", "global")  # every other kind is a route class: denied


STRICT = CodePolicy()
PERMISSIVE = CodePolicy("permissive", check_uses=False, check_writes=False)


def _prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


# ----- what names stand for ----------------------------------------------------------------------------
class _Resolver:
    """Looks up what a global name or an attribute path holds, without running anything the
    suggestion wrote: the original's namespace, loaded modules, and safe modules imported here."""

    def __init__(self, namespace: Mapping[str, Any] | None, policy: CodePolicy) -> None:
        self.namespace = namespace
        self.policy = policy

    def module(self, name: str) -> Any:
        """A module by its full name: loaded already, or a safe module imported now; else `_MISSING`."""
        found = sys.modules.get(name)
        if found is not None:
            return found
        if self.policy.is_safe_module(name) and name in SAFE_MODULES:  # standard library only
            try:
                return importlib.import_module(name)
            except ImportError:
                return _MISSING
        return _MISSING

    def global_(self, name: str) -> Any:
        if self.namespace is not None:
            if name in self.namespace:
                return self.namespace[name]
            return getattr(builtins, name, _MISSING)
        if name in sys.modules and "." not in name:  # no namespace: a loaded module's name is taken as that module
            return sys.modules[name]
        return getattr(builtins, name, _MISSING)

    @staticmethod
    def attribute(obj: Any, name: str) -> Any:
        if obj is _MISSING:
            return _MISSING
        try:
            return inspect.getattr_static(obj, name)
        except AttributeError:
            return _MISSING
        except Exception:  # an object whose type machinery is odd: unknown
            return _MISSING


# ----- reading what a function does ------------------------------------------------------------------
def uses(shape: FunctionShape, resolver: _Resolver | None = None) -> list[Use]:
    """What the function (with its module-level imports) imports, names, reads, calls and writes."""
    reader = _Reader(shape, resolver or _Resolver(None, STRICT))
    reader.read()
    docstrings = _docstring_nodes(shape.tree)
    return [use for use in reader.found if not (use.kind == "string" and use.line in docstrings)]


class _Reader:
    """One pass over a parsed code value, with the compiler's scoping rules for names."""

    def __init__(self, shape: FunctionShape, resolver: _Resolver) -> None:
        self.shape = shape
        self.resolver = resolver
        self.found: list[Use] = []
        self.parents: dict[int, ast.AST] = {}
        self.scopes: dict[int, _Scope] = {}
        self.imported: dict[str, Any] = {}  # names bound by imports anywhere -> what they hold (or _MISSING)

    def use(self, kind: str, name: str, node: ast.AST | None, also: tuple[tuple[str, str], ...] = ()) -> None:
        self.found.append(Use(kind, name, getattr(node, "lineno", 0), also))

    # ----- passes -------------------------------------------------------------------------------
    def read(self) -> None:
        tree = self.shape.tree
        nodes = list(ast.walk(tree))
        for parent in nodes:
            for child in ast.iter_child_nodes(parent):
                self.parents[id(child)] = parent
        self.scopes = _scopes(tree)
        for node in nodes:  # imports first: the names they bind are known when the body reads them
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.read_import(node)
        for node in nodes:
            self.read_node(node)

    def read_import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                plain = () if "." in alias.name else (("name", alias.name),)
                self.use("import", alias.name, node, also=(*plain, ("chain", alias.name), ("module", alias.name)))
                if alias.asname:
                    self.imported[alias.asname] = self.resolver.module(alias.name)
                else:
                    top = alias.name.split(".")[0]
                    self.imported[top] = self.resolver.module(top)
            return
        if node.level:
            self.use("relative import", "." * node.level + (node.module or ""), node)
            for alias in node.names:
                self.imported[alias.asname or alias.name] = _MISSING
            return
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                self.use("star import", module, node)
                continue
            dotted = f"{module}.{alias.name}"
            if module == "builtins":  # `from builtins import open`: judged as the builtin name
                self.use("name", alias.name, node)
                self.imported[alias.asname or alias.name] = getattr(builtins, alias.name, _MISSING)
                continue
            held = self.resolver.attribute(self.resolver.module(module), alias.name)
            if held is _MISSING and f"{module}.{alias.name}" in sys.modules:
                held = sys.modules[dotted]
            self.imported[alias.asname or alias.name] = held
            self.use(
                "from", dotted, node, also=(("chain", dotted), ("module", dotted), ("from", dotted), ("import", dotted))
            )
            if inspect.ismodule(held) and module != "__future__":
                self.use("module", held.__name__, node, also=(("chain", dotted), ("from", dotted)))
            if alias.name.startswith("_") or alias.name in MODULE_ATTRIBUTE_NAMES or _DUNDER.fullmatch(alias.name):
                if module != "__future__":
                    self.use("attribute", alias.name, node)

    def read_node(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            self.read_name(node)
        elif isinstance(node, ast.Attribute):
            self.read_attribute(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for name in _DUNDER.findall(node.value):
                self.use("string", name, node)
        elif isinstance(node, ast.Call):
            self.read_call(node)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                self.use("global", name, node)
        elif isinstance(node, ast.ClassDef):
            self.use("class", node.name, node)
            for keyword in node.keywords:
                self.use("class", f"{node.name}({keyword.arg}=...)", node)
            self.read_inner_definition(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda) and _DUNDER.fullmatch(node.name):
                self.use("method", node.name, node)
            if node is not self.shape.function:
                self.read_inner_definition(node)
        for target in _write_targets(node):
            root = _root_name(target)
            if root is not None and not self.is_local(root, target):
                self.use("write", root.id, node)

    def read_inner_definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef) -> None:
        """Decorators, defaults and annotations of an inner definition run when it is defined."""
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                self.use("decorator", ast.unparse(decorator), node)
        if isinstance(node, ast.ClassDef):
            return
        arguments = node.args
        evaluated = [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]
        if not isinstance(node, ast.Lambda):
            evaluated += [
                a.annotation
                for a in (
                    *arguments.posonlyargs,
                    *arguments.args,
                    *arguments.kwonlyargs,
                    arguments.vararg,
                    arguments.kwarg,
                )
                if a is not None and a.annotation
            ]
            if node.returns is not None:
                evaluated.append(node.returns)
        for expression in evaluated:
            if not _plain(expression):
                self.use("default", ast.unparse(expression)[:60], node)

    # ----- names -----------------------------------------------------------------------------------
    def is_local(self, name: ast.Name, at: ast.AST) -> bool:
        scope = self.scope_of(at)
        return scope is not None and scope.resolves_locally(name.id)

    def scope_of(self, node: ast.AST) -> _Scope | None:
        current: ast.AST | None = node
        while current is not None:
            parent = self.parents.get(id(current))
            if parent is None:
                return None
            if id(parent) in self.scopes and not _evaluated_outside(parent, current):
                return self.scopes[id(parent)]
            current = parent
        return None

    def held(self, name: ast.Name) -> Any:
        """What a non-local name stands for (an import's module, a namespace value), or `_MISSING`."""
        if name.id in self.imported:
            return self.imported[name.id]
        return self.resolver.global_(name.id)

    def read_name(self, node: ast.Name) -> None:
        name = node.id
        local = self.is_local(node, node)
        if local and name not in self.imported:
            if _DUNDER.fullmatch(name):
                self.use("name", name, node)
            return
        parent = self.parents.get(id(node))
        if name in self.imported and not local:
            held = self.imported[name]
        elif name in self.imported:  # a function-level import
            held = self.imported[name]
        else:
            held = self.resolver.global_(name)
            if name != self.shape.name:
                self.use("name", name, node)
        if inspect.ismodule(held) and not (isinstance(parent, ast.Attribute) and parent.value is node):
            self.use("module value", held.__name__, node, also=(("module value", name),))
        if name in ("getattr", "hasattr") and not _literal_getattr(parent, node):
            self.use("getattr", f"{name} with a computed name, or passed as a value", node)
        if name == "type" and not (
            isinstance(parent, ast.Call) and parent.func is node and len(parent.args) == 1 and not parent.keywords
        ):
            self.use("type", "three arguments, or passed as a value", node)

    # ----- attributes -------------------------------------------------------------------------------
    def read_attribute(self, node: ast.Attribute) -> None:
        self.read_attribute_name(node.attr, node)
        parent = self.parents.get(id(node))
        if isinstance(parent, ast.Attribute) and parent.value is node:
            return  # not the end of a chain: the outermost attribute reads the whole chain
        self.read_chain(node, parent)

    def read_attribute_name(self, attribute: str, node: ast.AST) -> None:
        if (
            (attribute.startswith("_") and attribute not in SAFE_DUNDERS)
            or attribute in DENY_ATTRIBUTES
            or attribute in HARD_DENY_ATTRIBUTES
            or attribute in MODULE_ATTRIBUTE_NAMES
            or attribute in self.resolver.policy.deny_attributes
        ):
            self.use("attribute", attribute, node)

    def read_chain(self, end: ast.Attribute, parent: ast.AST | None, extra: tuple[str, ...] = ()) -> None:
        """``root.a.b.c``: modules reached through modules, and paths into modules that are not safe."""
        attributes: list[str] = list(extra)
        current: ast.expr = end
        while isinstance(current, ast.Attribute):
            attributes.insert(0, current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            return
        root = current
        if self.is_local(root, root) and root.id not in self.imported:
            return
        held = self.held(root)
        unknown = held is _MISSING
        dotted = root.id
        policy = self.resolver.policy
        for index, attribute in enumerate(attributes):
            path = f"{dotted}.{attribute}"
            if inspect.ismodule(held):
                module = held.__name__
                if not policy.is_safe_module(module):
                    self.use("chain", path, end, also=(("chain", f"{module}.{attribute}"),))
            elif unknown and index == 0:  # a global the policy cannot resolve: as careful as with a module
                self.use("chain", path, end)
            nxt = self.resolver.attribute(held, attribute)
            if inspect.ismodule(nxt):
                self.use("module", nxt.__name__, end, also=(("chain", path), ("module", path)))
            held, dotted = nxt, path
        if inspect.ismodule(held) and not extra and not (isinstance(parent, ast.Attribute) and parent.value is end):
            self.use("module value", held.__name__, end, also=(("module value", dotted),))

    # ----- calls -----------------------------------------------------------------------------------
    def read_call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and _is_text(node.args[1])
            and not self.is_local(func, func)
        ):
            attribute = node.args[1].value  # type: ignore[attr-defined]
            self.read_attribute_name(attribute, node)
            target = node.args[0]
            if isinstance(target, (ast.Name, ast.Attribute)):
                end = target if isinstance(target, ast.Attribute) else None
                if end is not None:
                    self.read_chain(end, node, extra=(attribute,))
                else:
                    self.read_chain(
                        ast.Attribute(value=target, attr=attribute, ctx=ast.Load(), lineno=node.lineno), node
                    )
        if isinstance(func, ast.Attribute) and func.attr in ("format", "format_map"):
            receiver = func.value
            if isinstance(receiver, ast.Name) and receiver.id == "str" and node.args:
                receiver = node.args[0]
            if _is_text(receiver):
                for field_name in _format_fields(receiver.value):  # type: ignore[attr-defined]
                    for attribute in re.findall(r"\.([^.\[]+)", field_name):
                        self.read_attribute_name(attribute, node)
            else:
                self.use("format", f"{ast.unparse(func)[:40]} on a value that is not a literal", node)
        if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
            root = _root_name(func.value)
            if root is not None and not self.is_local(root, root) and root.id not in SAFE_BUILTINS:
                self.use("mutate", root.id, node)


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _literal_getattr(parent: ast.AST | None, node: ast.Name) -> bool:
    return (
        isinstance(parent, ast.Call)
        and parent.func is node
        and 2 <= len(parent.args) <= 3
        and not parent.keywords
        and _is_text(parent.args[1])
    )


def _format_fields(text: str) -> list[str]:
    try:
        return [name for _, name, spec, _ in string.Formatter().parse(text) if name]
    except ValueError:
        return []


def _plain(expression: ast.expr) -> bool:
    """A default or annotation that runs nothing: constants, names, attribute paths, tuples of them."""
    if isinstance(expression, (ast.Constant, ast.Name)):
        return True
    if isinstance(expression, ast.Attribute):
        return _plain(expression.value)
    if isinstance(expression, (ast.Tuple, ast.List)):
        return all(_plain(e) for e in expression.elts)
    if isinstance(expression, ast.Subscript):  # list[int]
        return _plain(expression.value) and _plain(expression.slice)
    if isinstance(expression, ast.BinOp) and isinstance(expression.op, ast.BitOr):  # int | None
        return _plain(expression.left) and _plain(expression.right)
    if isinstance(expression, ast.UnaryOp):
        return _plain(expression.operand)
    return False


# ----- scopes: which names a function owns -------------------------------------------------------------------
class _Scope:
    """The names one function, lambda, class or comprehension binds, as the compiler sees them."""

    def __init__(self, node: ast.AST, parent: _Scope | None) -> None:
        self.node = node
        self.parent = parent
        self.bound: set[str] = set()
        self.declared_global: set[str] = set()
        self.declared_nonlocal: set[str] = set()

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, ast.ClassDef)

    def resolves_locally(self, name: str) -> bool:
        """Whether ``name`` read here is a local of this scope or of an enclosing function."""
        scope: _Scope | None = self
        first = True
        while scope is not None:
            if name in scope.declared_global:
                return False
            if (first or not scope.is_class) and (name in scope.bound or name in scope.declared_nonlocal):
                return True
            first = False
            scope = scope.parent
        return False


def _scopes(tree: ast.Module) -> dict[int, _Scope]:
    """A `_Scope` for every function, lambda, class and comprehension (module level is left out:
    a name bound only there is a global of the module the code runs in)."""
    scopes: dict[int, _Scope] = {}

    def visit(node: ast.AST, scope: _Scope | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, _SCOPES):
                if scope is not None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    scope.bound.add(child.name)
                inner = _Scope(child, scope)
                scopes[id(child)] = inner
                if not isinstance(child, ast.ClassDef) and not isinstance(
                    child, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
                ):
                    arguments = child.args
                    for arg in (
                        *arguments.posonlyargs,
                        *arguments.args,
                        *arguments.kwonlyargs,
                        arguments.vararg,
                        arguments.kwarg,
                    ):
                        if arg is not None:
                            inner.bound.add(arg.arg)
            elif scope is not None:
                _bind(child, scope)
            visit(child, inner)

    visit(tree, None)
    return scopes


def _bind(node: ast.AST, scope: _Scope) -> None:
    """Record the names ``node`` binds in ``scope`` (a walrus in a comprehension binds outside it)."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        scope.bound.add(node.id)
    elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
        target = scope
        while target.parent is not None and isinstance(
            target.node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
        ):
            target = target.parent
        target.bound.add(node.target.id)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        scope.bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ExceptHandler) and node.name:
        scope.bound.add(node.name)
    elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
        scope.bound.add(node.name)
    elif isinstance(node, ast.MatchMapping) and node.rest:
        scope.bound.add(node.rest)
    elif isinstance(node, ast.Global):
        scope.declared_global.update(node.names)
    elif isinstance(node, ast.Nonlocal):
        scope.declared_nonlocal.update(node.names)


def _evaluated_outside(scope_node: ast.AST, child: ast.AST) -> bool:
    """Decorators, defaults, annotations and bases of a definition run in the enclosing scope."""
    if isinstance(scope_node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        if child in scope_node.decorator_list:
            return True
        if isinstance(scope_node, ast.ClassDef):
            return child in scope_node.bases or child in scope_node.keywords
        return child is scope_node.args or child is scope_node.returns
    if isinstance(scope_node, ast.Lambda):
        return child is scope_node.args
    return False


def _write_targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = list(node.targets)
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
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


def _root_name(node: ast.expr) -> ast.Name | None:
    """``RATE`` for ``RATE.value``, ``CONFIG["a"].b`` and ``RATE.meta.update``; None for ``f().x``."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node if isinstance(node, ast.Name) else None


def _docstring_nodes(tree: ast.Module) -> set[int]:
    """Lines of docstrings (a dunder mentioned in a docstring is prose, not an access)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


# ----- what the original sees -------------------------------------------------------------------------------
def namespace_of(function: Any) -> dict[str, Any] | None:
    """The names a live function sees besides its locals: module globals and closure values.

    The policy reads it to tell a module from another object; None when ``function`` is not a
    Python function (the policy then judges names without it, more strictly).
    """
    try:
        plain = unwrap(function)
    except SourceUnavailable:
        return None
    names: dict[str, Any] = dict(plain.__globals__)
    for name, cell in zip(plain.__code__.co_freevars, plain.__closure__ or ()):
        try:
            names[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    return names


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


__all__ = [
    "CodePolicy",
    "HARD_DENY_ATTRIBUTES",
    "HARD_DENY_MODULES",
    "HARD_DENY_NAMES",
    "SAFE_BUILTINS",
    "SAFE_MODULES",
    "STRICT",
    "PERMISSIVE",
    "Use",
    "apply_policy",
    "namespace_of",
    "uses",
]
