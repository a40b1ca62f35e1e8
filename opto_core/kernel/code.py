"""Code parameters: a function's source, the shape a new version must keep, and compiling it like the original.

A ``code`` parameter is the source of one Python function (a tool, a parser, a controller). The
optimizer may rewrite its body; it must keep the function's name, signature and decorators.
Three jobs live here and nowhere else, so every adapter treats code the same way:

1. `function_source`: the source of a live function, without the decorators a framework consumed
   (``@tool``), dedented. It works for methods, closures, ``functools.partial``, lambdas, and for
   functions compiled here (their source is registered in `linecache`), even after the file
   they came from is gone, as long as it was read once.
2. `parse_function`: what a source defines, parsed, never executed: the function, its signature,
   decorators, and the module-level statements around it. The static policy
   (`opto_core.kernel.code_policy`) reads this tree before anything runs.
3. `compile_like`: turn an accepted source into a function that behaves like the original would
   with that body: the original module's globals, the same closure cells (by name), the same
   ``__future__`` flags, and a `linecache` entry so tracebacks and `inspect.getsource` point
   into the new source.
"""

from __future__ import annotations
import __future__

import ast
import functools
import hashlib
import inspect
import linecache
import textwrap
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable

_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag

#: source text by code object, for functions whose file is gone (read once, or compiled here)
_KNOWN_SOURCES: dict[types.CodeType, str] = {}
_LOCK = threading.Lock()
#: The process whose runs happen in worker processes (isolation 'process'/'sandbox'), and how many
#: executors say so: there, compiling a value must run no module code that was not loaded already.
_RUNS_ELSEWHERE = {"pid": 0, "count": 0}


class SourceUnavailable(OSError):
    """The function's source cannot be found (a builtin, or a file that is gone and was never read)."""


@dataclass(frozen=True)
class FunctionShape:
    """What a code value defines, read from its syntax tree."""

    name: str
    signature: str  # "(a: int, b=2) -> str"
    is_async: bool
    decorators: tuple[str, ...]  # each decorator's source text, in order
    tree: ast.Module
    function: ast.FunctionDef | ast.AsyncFunctionDef


class CodeShapeError(ValueError):
    """A code value that is not one plain function (the reason is meant for the optimizer)."""


# ----- 1. source ------------------------------------------------------------------------------
def unwrap(fn: Any) -> types.FunctionType:
    """The plain function behind a method, ``functools.partial``, staticmethod or ``@wraps`` wrapper."""
    seen = 0
    while seen < 16:
        seen += 1
        wrapped = getattr(fn, "__wrapped__", None)
        if isinstance(fn, types.FunctionType) and callable(wrapped):
            fn = wrapped  # a @functools.wraps wrapper: wrappers of one decorator share one code object
        elif isinstance(fn, functools.partial):
            fn = fn.func
        elif isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
        elif inspect.ismethod(fn):
            fn = fn.__func__
        elif isinstance(fn, types.FunctionType):
            return fn
        elif callable(getattr(fn, "__wrapped__", None)):
            fn = fn.__wrapped__
        else:
            break
    raise SourceUnavailable(f"{fn!r} is not a Python function")


def function_source(fn: Any) -> str:
    """The source of ``fn`` without decorators, dedented, ending in one newline.

    A lambda gives its expression's line(s) as written. Raises `SourceUnavailable`.
    """
    function = unwrap(fn)
    code = function.__code__
    with _LOCK:
        known = _KNOWN_SOURCES.get(code)
    if known is not None:
        return known
    try:
        lines, _ = inspect.getsourcelines(function)
    except (OSError, TypeError) as exc:
        raise SourceUnavailable(f"the source of {function.__qualname__} is not available: {exc}") from None
    source = textwrap.dedent("".join(lines))
    if function.__name__ != "<lambda>":
        source = _strip_decorators(source, function.__qualname__)
    source = source.rstrip() + "\n"
    with _LOCK:
        _KNOWN_SOURCES[code] = source
    return source


def _strip_decorators(source: str, qualname: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise SourceUnavailable(f"the source of {qualname} does not parse on its own: {exc.msg}") from None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise SourceUnavailable(f"{qualname} is not defined by a def statement")
    lines = source.splitlines(keepends=True)
    return "".join(lines[node.lineno - 1 :])


# ----- 2. shape ----------------------------------------------------------------------------------
def parse_function(source: Any) -> FunctionShape:
    """Parse a code value that must be: imports, an optional docstring and exactly one function.

    Raises `CodeShapeError` with a reason for the optimizer. Nothing is compiled or run.
    """
    if not isinstance(source, str):
        raise CodeShapeError(f"expected Python source code (a string), got {type(source).__name__}")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise CodeShapeError(f"the code does not parse: {exc.msg} (line {exc.lineno})") from None
    except ValueError as exc:  # null bytes
        raise CodeShapeError(f"the code does not parse: {exc}") from None
    functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    docstring_seen = False
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)
            and not docstring_seen
            and not functions
        ):
            docstring_seen = True  # a module docstring
            continue
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(statement)
            continue
        raise CodeShapeError(
            f"only imports, a docstring and one function definition may stand at module "
            f"level; line {statement.lineno} is a {type(statement).__name__}"
        )
    if len(functions) != 1:
        raise CodeShapeError(f"the code must define exactly one function, found {len(functions)}")
    function = functions[0]
    try:
        compile(tree, "<check>", "exec", dont_inherit=True)  # syntax errors the parser lets through
    except SyntaxError as exc:
        raise CodeShapeError(f"the code does not compile: {exc.msg} (line {exc.lineno})") from None
    returns = f" -> {ast.unparse(function.returns)}" if function.returns is not None else ""
    return FunctionShape(
        function.name,
        "(" + ast.unparse(function.args) + ")" + returns,
        isinstance(function, ast.AsyncFunctionDef),
        tuple(ast.unparse(d) for d in function.decorator_list),
        tree,
        function,
    )


def same_shape(original: FunctionShape, new: FunctionShape) -> None:
    """A new version keeps the name, the signature (async-ness included) and the decorators exactly."""
    if new.name != original.name:
        raise CodeShapeError(f"the function must keep its name {original.name!r}, got {new.name!r}")
    if new.signature != original.signature or new.is_async != original.is_async:
        raise CodeShapeError(
            f"the signature must stay `{original.name}{original.signature}`, got `{new.name}{new.signature}`"
        )
    if new.decorators != original.decorators:
        raise CodeShapeError(
            f"the decorators must stay exactly {list(original.decorators) or 'none'}, got {list(new.decorators)}"
        )


# ----- 3. compile --------------------------------------------------------------------------------
def compile_like(source: str, original: Any, *, label: str | None = None) -> types.FunctionType:
    """Compile ``source`` (one accepted function) so it runs where ``original`` runs.

    The new function shares the original's module globals (so later changes to module state are
    seen), gets the original's closure cells for the free variables they share, and keeps the
    original's ``__future__`` flags. Names that the source imports at module level and that the
    original's module binds differently are the only exception: then the function runs in a copy
    of those globals with the imports added. Callers must have checked ``source`` with
    `parse_function` and the code policy first: the module-level imports run here.
    """
    base = unwrap(original)
    shape = parse_function(source)
    filename = _register(source, label or base.__qualname__)
    flags = base.__code__.co_flags & _FUTURE_FLAGS
    freevars = base.__code__.co_freevars
    module_code = compile(_in_factory(shape, freevars), filename, "exec", flags=flags, dont_inherit=True)
    imports = _imports(shape.tree)
    globals_ = base.__globals__
    if imports and runs_elsewhere():
        _refuse_new_modules(imports)
    if imports:
        scratch: dict[str, Any] = {
            "__builtins__": globals_.get("__builtins__", __builtins__),
            "__name__": globals_.get("__name__"),
        }
        exec(compile(ast.Module(body=imports, type_ignores=[]), filename, "exec", dont_inherit=True), scratch)
        bound = {k: v for k, v in scratch.items() if k not in ("__builtins__", "__name__")}
        if any(k not in globals_ or globals_[k] is not v for k, v in bound.items()):
            globals_ = {**globals_, **bound}
    code = _function_code(module_code, shape.name, freevars)
    cells = dict(zip(freevars, base.__closure__ or ()))
    closure = tuple(cells[name] if name in cells else types.CellType() for name in code.co_freevars) or None
    defaults = _defaults(shape, base, globals_)
    function = types.FunctionType(code, globals_, shape.name, defaults[0], closure)
    function.__kwdefaults__ = defaults[1]
    function.__qualname__ = base.__qualname__
    function.__module__ = base.__module__
    function.__doc__ = ast.get_docstring(shape.function)
    function.__annotations__ = dict(getattr(base, "__annotations__", {}) or {})
    if base.__dict__:
        function.__dict__.update(base.__dict__)
    with _LOCK:
        _KNOWN_SOURCES[function.__code__] = source if source.endswith("\n") else source + "\n"
    return function


def runs_elsewhere(active: bool | None = None) -> bool:
    """Whether this process hands its runs to worker processes; ``active`` says it starts (True) or
    stops (False) doing so (`opto_core.engine.executors.process.ProcessExecutor`). Forked children
    are not this process: they run what they compile."""
    import os

    with _LOCK:
        if active is not None:
            if _RUNS_ELSEWHERE["pid"] != os.getpid():
                _RUNS_ELSEWHERE.update(pid=os.getpid(), count=0)
            _RUNS_ELSEWHERE["count"] = max(0, _RUNS_ELSEWHERE["count"] + (1 if active else -1))
        return _RUNS_ELSEWHERE["pid"] == os.getpid() and _RUNS_ELSEWHERE["count"] > 0


def _refuse_new_modules(imports: list[ast.stmt]) -> None:
    """In a process whose runs are isolated, an adapter still compiles each value it applies (a tool
    needs a function), and compiling runs the value's module-level imports. Importing a module that is
    not loaded yet runs that module's code here, outside the box (``import unittest.__main__`` runs
    the test runner and exits): only modules already loaded, and the policy's safe standard-library
    modules, may be imported at module level; anything else belongs inside the function body."""
    import sys

    from opto_core.kernel.code_policy import SAFE_MODULES

    def loaded(name: str) -> bool:
        return name in sys.modules or name in SAFE_MODULES

    for statement in imports:
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        elif not isinstance(statement, ast.ImportFrom):
            continue
        elif statement.level or not statement.module:
            names = ["." * statement.level + (statement.module or "")]
        else:
            module = sys.modules.get(statement.module)
            names = [statement.module] + [
                f"{statement.module}.{alias.name}"
                for alias in statement.names
                if module is None or alias.name not in vars(module)
            ]
        new = [name for name in names if not loaded(name)]
        if new:
            raise CodeShapeError(
                f"imports {new[0]!r} at module level, a module not loaded in this process: the runs "
                f"happen in isolated worker processes, and importing it here would run its code "
                f"outside them; import it inside the function body"
            )


def _register(source: str, label: str) -> str:
    """Put the source in `linecache` under a unique name (mtime None: `checkcache` leaves it alone)."""
    digest = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    filename = f"<opto-code {label} {digest}>"
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)
    return filename


def _in_factory(shape: FunctionShape, freevars: tuple[str, ...]) -> ast.Module:
    """The function definition alone, inside a factory that declares the original's free variables.

    Compiled from the syntax tree, so every line number stays the one in the source; the new
    code object then refers to those names as closure cells, not globals.
    """
    if not freevars:
        return ast.Module(body=[shape.function], type_ignores=[])
    declare = [ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=ast.Constant(None)) for name in freevars]
    factory = ast.FunctionDef(
        name="__opto_factory__",
        args=ast.arguments(
            posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
        ),
        body=[*declare, shape.function, ast.Return(value=ast.Name(id=shape.name, ctx=ast.Load()))],
        decorator_list=[],
        returns=None,
    )
    module = ast.Module(body=[factory], type_ignores=[])
    for node in (factory, *declare, factory.body[-1]):
        node.lineno = node.end_lineno = shape.function.lineno
        node.col_offset = node.end_col_offset = 0
    return ast.fix_missing_locations(module)


def _function_code(module_code: types.CodeType, name: str, freevars: tuple[str, ...]) -> types.CodeType:
    consts = module_code.co_consts
    if freevars:
        factory = next(c for c in consts if isinstance(c, types.CodeType) and c.co_name == "__opto_factory__")
        consts = factory.co_consts
    return next(c for c in consts if isinstance(c, types.CodeType) and c.co_name == name)


def _imports(tree: ast.Module) -> list[ast.stmt]:
    return [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]


def _defaults(shape: FunctionShape, base: types.FunctionType, globals_: dict[str, Any]) -> tuple[Any, Any]:
    """Default values: the original's objects when the default expressions are unchanged (they are
    by the signature rule), so that a mutable default or a sentinel keeps its identity."""
    return base.__defaults__, (dict(base.__kwdefaults__) if base.__kwdefaults__ else None)


def compile_checked(source: str, original: Any, label: str | None = None) -> Callable[..., Any]:
    """`parse_function` + `same_shape` against the original's own source, then `compile_like`."""
    same_shape(parse_function(function_source(original)), parse_function(source))
    return compile_like(source, original, label=label)


# ----- 4. a signature a framework reads -------------------------------------------------------------
def keeps_signature_bindings(original: Any) -> Callable[[str], str]:
    """A `Parameter` check for code whose signature a framework reads (a tool's argument schema).

    The shape rule already keeps the signature's *text*; the schema can still change when the new
    code imports a name the signature uses (``from builtins import str as int``). Such an import must
    bind the very object the original's module binds, and every module the code imports must exist.
    Both are read from the syntax tree and from modules already loaded (a module not loaded yet is
    only looked up, never imported), so nothing the optimizer wrote runs here.
    """
    import builtins
    import importlib.util
    import sys

    module_globals = getattr(unwrap(original), "__globals__", {})
    missing = object()

    def imported(statement: ast.Import | ast.ImportFrom, alias: ast.alias) -> Any:
        if isinstance(statement, ast.Import):
            return sys.modules.get(alias.name if alias.asname else alias.name.split(".")[0], missing)
        if statement.level or statement.module not in sys.modules:
            return missing
        return getattr(sys.modules[statement.module], alias.name, missing)

    def check(source: str) -> str:
        shape = parse_function(source)
        used = {
            n.id
            for part in (shape.function.args, shape.function.returns)
            if part is not None
            for n in ast.walk(part)
            if isinstance(n, ast.Name)
        }
        for statement in shape.tree.body:
            if not isinstance(statement, (ast.Import, ast.ImportFrom)):
                continue
            for alias in statement.names:
                module = alias.name if isinstance(statement, ast.Import) else (statement.module or "")
                top = module.split(".")[0]
                relative = isinstance(statement, ast.ImportFrom) and statement.level > 0
                if top and not relative and top not in sys.modules and importlib.util.find_spec(top) is None:
                    raise ValueError(f"the code fails when defined: ModuleNotFoundError: no module named {top!r}")
                bound = (alias.asname or alias.name).split(".")[0]
                if bound in used and imported(statement, alias) is not module_globals.get(
                    bound, getattr(builtins, bound, missing)
                ):
                    raise ValueError(
                        f"the tool's argument schema would change, and the tool's arguments must stay "
                        f"as they are: the code imports {bound!r}, a name its signature uses, bound "
                        f"to another object than in the original's module, so its JSON schema changed "
                        f"with it; keep the argument names, types and defaults"
                    )
        return source

    return check
