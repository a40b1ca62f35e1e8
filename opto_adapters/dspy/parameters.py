"""The trainable parts of a DSPy program as OPTO parameters: discovery, write-back, undo, sidecar.

Per predictor (names from ``program.named_predictors()``, so two predictors with identical
signatures never share a name): ``<p>.instructions`` and ``<p>.fields.<f>.desc`` (text),
``<p>.demos`` (json), ``<p>.lm.temperature`` / ``<p>.lm.max_tokens`` (numbers with bounds).
Per tool (``dspy.ReAct`` tools and any ``dspy.Tool`` attribute): ``<path>.code`` (the Python
function) and ``<path>.desc`` (text). ``dspy.ReAct`` copies tool descriptions into its
``react`` predictor's instructions when it is built, so a new description is also written there.

DSPy's JSON (``program.save``) holds instructions, field descriptions and demos, but neither
``Predict.config`` (where LM settings are written) nor tool code and descriptions: those go to
a sidecar file (``save_optimized`` / ``load_optimized``).
"""

from __future__ import annotations

import copy
import fnmatch
from collections import deque
import hashlib
import inspect
import json
import linecache
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dspy

from opto_core.parameters import Parameter

SIDECAR_FORMAT = "opto-dspy/1"
#: Shown as the value of an LM setting no one set (the provider's default then applies).
UNSET_DEFAULTS: dict[str, float | int] = {"temperature": 1.0, "max_tokens": 4096}
DEFAULT_LM_BOUNDS: dict[str, tuple[float, float]] = {"temperature": (0.0, 2.0), "max_tokens": (16, 16384)}
_DEMO_EXTRA_KEYS = {"augmented"}


def module_path(path: str, root: str = "") -> str:
    """``self.agent.tools[search]`` -> ``agent.tools.search``; ``self`` -> ``root``."""
    if path == "self":
        return root
    if path.startswith("self."):
        path = path[5:]
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path)
    return path.strip(".")


#: Attributes optimizers attach to a compiled program (results, not structure): never searched for parts.
RESULT_ATTRIBUTES = {"candidate_programs", "opto_history", "opto_result", "trial_logs", "detailed_results",
                     "score", "opto_report"}


def sub_modules(program: Any, type_: Any = None) -> list[tuple[str, Any]]:
    """Like ``program.named_sub_modules(type_)``, without walking DSPy's per-module LM ``history`` (it
    grows with every call) or what optimizers attach as results (candidate programs)."""
    from dspy.primitives.base_module import BaseModule

    type_ = type_ or BaseModule
    skip = RESULT_ATTRIBUTES | {"history", "callbacks"}
    found: list[tuple[str, Any]] = []
    queue: deque[tuple[str, Any]] = deque([("self", program)])
    seen = {id(program)}
    while queue:
        path, item = queue.popleft()
        if isinstance(item, type_):
            found.append((path, item))
        if isinstance(item, BaseModule):
            children = [(f"{path}.{k}", v) for k, v in item.__dict__.items() if k not in skip]
        elif isinstance(item, (list, tuple)):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(item)]
        elif isinstance(item, dict):
            children = [(f"{path}[{k}]", v) for k, v in item.items()]
        else:
            continue
        for child_path, child in children:
            if id(child) not in seen:
                seen.add(id(child))
                queue.append((child_path, child))
    return found


def predictor_name(name: str) -> str:
    """DSPy's predictor name, except that a top-level ``dspy.Predict`` (named ``self``) is ``predict``."""
    return "predict" if name == "self" else name


# ----- tool source: read, compile, keep readable ---------------------------------------------------
def function_source(fn: Callable[..., Any]) -> str | None:
    """The source of one plain function without decorators, dedented; None when not available."""
    if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
        return None
    try:
        lines = textwrap.dedent(inspect.getsource(fn)).splitlines(keepends=True)
    except (OSError, TypeError):
        return None
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("def ", "async def ")):
            return "".join(lines[index:])
    return None


def compile_function(source: str, like: Callable[..., Any], label: str) -> Callable[..., Any]:
    """Compile ``source`` (one function) where ``like`` was defined: its globals plus its closure.

    The source is registered in ``linecache`` so that ``inspect.getsource`` works on the result,
    which keeps a rewritten tool rewritable (and saveable) later.
    """
    namespace: dict[str, Any] = dict(like.__globals__)
    if like.__closure__:
        for name, cell in zip(like.__code__.co_freevars, like.__closure__):
            try:
                namespace[name] = cell.cell_contents
            except ValueError:  # an empty cell
                pass
    digest = hashlib.sha1(source.encode()).hexdigest()[:10]
    filename = f"<opto:{label}:{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the point of a code parameter
    fn = namespace.get(like.__name__)
    if not callable(fn):
        raise ValueError(f"the code must define the function {like.__name__!r}")
    return fn


def _demo_to_json(demo: Any) -> dict[str, Any]:
    items = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    return json.loads(json.dumps(items, allow_nan=False))


# ----- bindings: one parameter, where it lives, how to write it ------------------------------------
@dataclass
class Binding:
    """One parameter of a DSPy program: how to read it, check it and write it back."""

    name: str
    kind: str
    role: str  # instructions | field_desc | demos | temperature | max_tokens | tool_code | tool_desc
    owner: Any  # the dspy.Predict or dspy.Tool it belongs to
    get: Callable[[], Any]
    set: Callable[[Any], None]
    description: str = ""
    lower: float | None = None
    upper: float | None = None
    checks: list[Callable[[Any], Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    trainable: bool = True
    #: where the tracer links the parameter: ``format`` (the prompt), ``lm`` (the LM call), ``tool``
    stage: str = "format"
    arg: str = ""

    def parameter(self) -> Parameter:
        return Parameter(self.name, self.kind, self.get(), trainable=self.trainable, description=self.description,
                         lower=self.lower, upper=self.upper, checks=list(self.checks), meta=dict(self.meta))


class ProgramParameters:
    """Every parameter of one DSPy program, bound to the live objects (write-back with undo).

    ``include`` / ``exclude`` are parameter names or shell patterns (``*.demos``); parameters
    that are excluded (or not included) stay in the graph as frozen values.
    """

    def __init__(self, program: Any, *, include: list[str] | None = None, exclude: list[str] | None = None,
                 optimize_lm_settings: bool = True, optimize_demos: bool = True,
                 lm_bounds: dict[str, tuple[float, float]] | None = None) -> None:
        if not isinstance(program, dspy.Module):
            raise TypeError(f"expected a dspy.Module (a DSPy program), got {type(program).__name__}")
        self.program = program
        self.optimize_lm_settings = optimize_lm_settings
        self.optimize_demos = optimize_demos
        self.lm_bounds = {**DEFAULT_LM_BOUNDS, **(lm_bounds or {})}
        self.predictors: list[tuple[str, Any]] = [(predictor_name(n), p) for n, p in program.named_predictors()]
        if not self.predictors:
            raise ValueError(
                f"the program {type(program).__name__} has no predictors (dspy.Predict, ChainOfThought, ReAct, ...) "
                "to optimize; note that sub-modules marked compiled (_compiled=True) are frozen by DSPy")
        self.skipped: dict[str, str] = {}  # parameters that could not be made, and why
        self._react_of_tool: dict[int, tuple[str, Any]] = {}
        self.tools: list[tuple[str, Any]] = self._find_tools()
        self.bindings: dict[str, Binding] = {}
        for name, predictor in self.predictors:
            for binding in self._predictor_bindings(name, predictor):
                self._add(binding)
        for path, tool in self.tools:
            for binding in self._tool_bindings(path, tool):
                self._add(binding)
        self._select(include, exclude)

    # ----- discovery -----------------------------------------------------------------------------
    def _add(self, binding: Binding) -> None:
        if binding.name in self.bindings:  # two paths with one name: refuse to guess
            raise ValueError(f"two parameters of the program would both be named {binding.name!r}")
        self.bindings[binding.name] = binding

    def _select(self, include: list[str] | None, exclude: list[str] | None) -> None:
        names = list(self.bindings)
        for label, patterns in (("include", include), ("exclude", exclude)):
            for pattern in patterns or []:
                if not fnmatch.filter(names, pattern):
                    raise ValueError(f"{label} pattern {pattern!r} matches no parameter; the parameters are: "
                                     + ", ".join(names))
        for name, binding in self.bindings.items():
            wanted = include is None or any(fnmatch.fnmatchcase(name, p) for p in include)
            unwanted = any(fnmatch.fnmatchcase(name, p) for p in exclude or [])
            binding.trainable = binding.trainable and wanted and not unwanted

    def _find_tools(self) -> list[tuple[str, Any]]:
        reacts = [(module_path(path), module) for path, module in sub_modules(self.program, dspy.ReAct)]
        for path, react in reacts:
            for tool in getattr(react, "tools", {}).values():
                self._react_of_tool[id(tool)] = (path, react)
        tools = []
        for path, tool in sub_modules(self.program, dspy.Tool):
            react = self._react_of_tool.get(id(tool))
            if react is not None and tool.name == "finish":
                continue  # built by ReAct itself
            tools.append((module_path(path), tool))
        return tools

    def _predictor_bindings(self, name: str, predictor: Any) -> list[Binding]:
        bindings = [self._instructions(name, predictor)]
        for field_name in predictor.signature.output_fields:
            bindings.append(self._field_desc(name, predictor, field_name))
        demos = self._demos(name, predictor)
        if demos is not None:
            bindings.append(demos)
        if self.optimize_lm_settings:
            bindings.append(self._lm_setting(name, predictor, "temperature", "float"))
            bindings.append(self._lm_setting(name, predictor, "max_tokens", "int"))
        return bindings

    def _instructions(self, name: str, predictor: Any) -> Binding:
        tools = [t for t in self._tools_of_react_predictor(predictor)]

        def check(value: str) -> str:
            if not value.strip():
                raise ValueError("the instructions must not be empty")
            missing = [t.name for t in tools if t.name not in value]
            if missing:
                raise ValueError(f"the ReAct instructions must keep listing the tools {missing} (they are the "
                                 "only tools the agent can call)")
            return value

        def write(value: str) -> None:
            predictor.signature = predictor.signature.with_instructions(value)

        description = "the task instructions of this predictor (the objective in its prompt)"
        if tools:
            description = ("the ReAct agent's instructions; they list the tools with their descriptions "
                           "(a tool's .desc parameter rewrites its line)")
        return Binding(f"{name}.instructions", "text", "instructions", predictor,
                       lambda: predictor.signature.instructions, write, description, checks=[check],
                       arg="instructions")

    def _field_desc(self, name: str, predictor: Any, field_name: str) -> Binding:
        def read() -> str:
            desc = predictor.signature.output_fields[field_name].json_schema_extra.get("desc", "")
            return "" if desc == f"${{{field_name}}}" else desc  # DSPy's placeholder for "no description"

        def write(value: str) -> None:
            desc = value if value.strip() else f"${{{field_name}}}"  # empty: no description, as DSPy writes it
            predictor.signature = predictor.signature.with_updated_fields(field_name, desc=desc)

        return Binding(f"{name}.fields.{field_name}.desc", "text", "field_desc", predictor, read, write,
                       f"the description of the output field `{field_name}` shown in the prompt (empty: none)",
                       meta={"field": field_name}, arg=f"{field_name}.desc")

    def _demos(self, name: str, predictor: Any) -> Binding | None:
        allowed = set(predictor.signature.fields) | _DEMO_EXTRA_KEYS
        inputs = set(predictor.signature.input_fields)

        def read() -> list[dict[str, Any]]:
            return [_demo_to_json(d) for d in predictor.demos]

        try:
            read()
        except (TypeError, ValueError) as exc:
            self.skipped[f"{name}.demos"] = f"the demos hold values that are not JSON ({exc})"
            return None

        def check(value: list[Any]) -> list[dict[str, Any]]:
            for index, demo in enumerate(value):
                if not isinstance(demo, dict) or not demo:
                    raise ValueError(f"demo {index} must be a non-empty JSON object of field values")
                unknown = sorted(set(demo) - allowed)
                if unknown:
                    raise ValueError(f"demo {index} has keys {unknown} that are not fields of the signature "
                                     f"(fields: {sorted(allowed - _DEMO_EXTRA_KEYS)})")
                if not inputs & set(demo):
                    raise ValueError(f"demo {index} has none of the input fields {sorted(inputs)}")
            return value

        def write(value: list[dict[str, Any]]) -> None:
            predictor.demos = [dspy.Example(**demo) for demo in value]

        return Binding(f"{name}.demos", "json", "demos", predictor, read, write,
                       "few-shot examples shown before the input: a list of objects with the signature's fields "
                       f"({', '.join(predictor.signature.fields)})", checks=[check], trainable=self.optimize_demos,
                       arg="demos")

    def _lm_setting(self, name: str, predictor: Any, key: str, kind: str) -> Binding:
        lower, upper = self.lm_bounds[key]

        def effective() -> tuple[Any, bool]:
            if predictor.config.get(key) is not None:
                return predictor.config[key], True
            lm = predictor.lm or dspy.settings.lm
            value = getattr(lm, "kwargs", {}).get(key) if lm is not None else None
            return value, value is not None

        def read() -> Any:
            value, known = effective()
            return (float(value) if kind == "float" else int(value)) if known else UNSET_DEFAULTS[key]

        def write(value: Any) -> None:
            current, known = effective()
            if not known and value == UNSET_DEFAULTS[key] and key not in predictor.config:
                return  # the shown default, unchanged: keep it unset
            predictor.config = {**predictor.config, key: value}

        current, known = effective()
        if known and current is not None:  # widen the bounds to hold what the user chose
            lower, upper = min(lower, current), max(upper, current)
        label = {"temperature": "the sampling temperature", "max_tokens": "the most tokens the LM may generate"}[key]
        description = f"{label} of this predictor's LM calls"
        if not known:
            description += f" (unset: the provider's default applies; shown as {UNSET_DEFAULTS[key]})"
        return Binding(f"{name}.lm.{key}", kind, key, predictor, read, write, description, lower=lower, upper=upper,
                       stage="lm", arg=key, meta={"unset": not known})

    def _tools_of_react_predictor(self, predictor: Any) -> list[Any]:
        for _, react in {id(r): (p, r) for p, r in self._react_of_tool.values()}.values():
            if getattr(react, "react", None) is predictor:
                return [t for t in react.tools.values() if t.name != "finish"]
        return []

    def _tool_bindings(self, path: str, tool: Any) -> list[Binding]:
        bindings = []
        original = tool.func
        source = function_source(original)
        label = path or tool.name
        react = self._react_of_tool.get(id(tool))
        if source is None:
            self.skipped[f"{label}.code"] = "the tool's function has no readable Python source (a lambda, a " \
                                            "builtin, a callable object or a partial)"
        else:
            try:
                schema = dspy.Tool(original).args
            except Exception:  # noqa: BLE001 - a tool built with explicit args only
                schema = None

            def check(value: str) -> str:
                fn = compile_function(value, original, f"{label}.code")
                if schema is not None:
                    new_schema = dspy.Tool(fn).args
                    if new_schema != schema:
                        raise ValueError(f"the tool's arguments must stay {json.dumps(schema)}, "
                                         f"got {json.dumps(new_schema)}")
                return value

            def write(value: str) -> None:
                tool.func = compile_function(value, original, f"{label}.code")

            bindings.append(Binding(f"{label}.code", "code", "tool_code", tool,
                                    lambda: function_source(tool.func) or source, write,
                                    f"the Python source of the tool `{tool.name}` (called with the LM's arguments)",
                                    checks=[check], stage="tool", arg="__code"))

        def write_desc(value: str) -> None:
            old_line = str(tool)
            tool.desc = value
            if react is not None:
                self._rewrite_tool_line(react[1], tool, old_line)

        def check_desc(value: str) -> str:
            if not value.strip():
                raise ValueError("a tool description must not be empty")
            return value

        where = " (ReAct lists it in the agent's instructions)" if react is not None else ""
        bindings.append(Binding(f"{label}.desc", "text", "tool_desc", tool, lambda: tool.desc or "", write_desc,
                                f"the description of the tool `{tool.name}` shown to the LM{where}",
                                checks=[check_desc], arg=f"tools.{tool.name}.desc",
                                meta={"react": react[0] if react else None}))
        return bindings

    @staticmethod
    def _rewrite_tool_line(react: Any, tool: Any, old_line: str) -> None:
        """Rewrite the line ``(k) <tool>`` that ReAct baked into its ``react`` predictor's instructions."""
        predictor = react.react
        text = predictor.signature.instructions
        new_line = str(tool)
        if old_line in text:
            text = text.replace(old_line, new_line)
        else:  # the instructions were rewritten: find the tool's numbered line, else add one
            pattern = re.compile(rf"^(\s*\(\d+\)\s+){re.escape(tool.name)}\b.*$", re.MULTILINE)
            if pattern.search(text):
                text = pattern.sub(lambda m: m.group(1) + new_line, text, count=1)
            else:
                count = len(re.findall(r"^\s*\(\d+\)\s", text, re.MULTILINE))
                marker = "When providing `next_tool_args`"
                line = f"({count + 1}) {new_line}"
                text = text.replace(marker, line + "\n" + marker, 1) if marker in text else text + "\n" + line
        predictor.signature = predictor.signature.with_instructions(text)

    # ----- the Target side -------------------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        """Every parameter with its current value (trainable or frozen)."""
        return [binding.parameter() for binding in self.bindings.values()]

    def index(self) -> dict[int, list[tuple[str, str, Parameter]]]:
        """For the tracer: ``{id(owner): [(stage, arg, Parameter)]}``, with current values.

        A tool description of a ReAct tool is also linked to the agent's ``react`` predictor,
        whose prompt shows it.
        """
        result: dict[int, list[tuple[str, str, Parameter]]] = {}
        for binding in self.bindings.values():
            parameter = binding.parameter()
            result.setdefault(id(binding.owner), []).append((binding.stage, binding.arg, parameter))
            if binding.role == "tool_desc":
                react = self._react_of_tool.get(id(binding.owner))
                if react is not None:
                    result.setdefault(id(react[1].react), []).append(("format", binding.arg, parameter))
        return result

    def names(self) -> dict[int, str]:
        """``{id(predictor or tool): name}`` for naming graph nodes."""
        names = {id(p): n for n, p in self.predictors}
        names.update({id(t): (path or t.name) for path, t in self.tools})
        return names

    _ORDER = ("instructions", "field_desc", "demos", "temperature", "max_tokens", "tool_code", "tool_desc")

    def apply(self, updates: dict[str, Any]) -> None:
        """Write values (already validated) into the live program; instructions before tool descriptions."""
        unknown = sorted(set(updates) - set(self.bindings))
        if unknown:
            raise KeyError(f"unknown parameters {unknown}; the program's parameters are {sorted(self.bindings)}")
        ordered = sorted(updates, key=lambda n: self._ORDER.index(self.bindings[n].role))
        for name in ordered:
            self.bindings[name].set(updates[name])

    def snapshot(self) -> dict[str, Any]:
        """The raw state behind every parameter (signatures, demos, configs, tool functions)."""
        return {
            "predictors": [(p, p.signature, list(p.demos), dict(p.config)) for _, p in self.predictors],
            "tools": [(t, t.func, t.desc) for _, t in self.tools],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        for predictor, signature, demos, config in snapshot["predictors"]:
            predictor.signature, predictor.demos, predictor.config = signature, list(demos), dict(config)
        for tool, func, desc in snapshot["tools"]:
            tool.func, tool.desc = func, desc

    # ----- sidecar -----------------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        return {name: copy.deepcopy(binding.get()) for name, binding in self.bindings.items()}

    def sidecar(self) -> dict[str, Any]:
        """Everything the optimizer may have changed, including what DSPy's JSON cannot hold."""
        return {"format": SIDECAR_FORMAT, "program": type(self.program).__name__,
                "dspy_version": getattr(dspy, "__version__", "?"), "values": self.values(),
                "lm_config": {name: dict(p.config) for name, p in self.predictors if p.config}}

    def load_sidecar(self, data: dict[str, Any], source: str = "sidecar") -> None:
        """Validate and write back every value of a sidecar (unknown names are an error)."""
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"{source}: not an opto-dspy sidecar (format {data.get('format')!r}, "
                             f"expected {SIDECAR_FORMAT!r})")
        values = data.get("values") or {}
        unknown = sorted(set(values) - set(self.bindings))
        if unknown:
            raise ValueError(f"{source} names parameters this program does not have: {unknown}; this program has "
                             f"{sorted(self.bindings)} (was it saved from a program of another structure?)")
        accepted = {}
        for name, value in values.items():
            parameter = self.bindings[name].parameter()
            if parameter.value != value:
                accepted[name] = parameter.validate(value)
        self.apply(accepted)
        by_name = dict(self.predictors)
        for name, config in (data.get("lm_config") or {}).items():
            if name in by_name:
                by_name[name].config = {**by_name[name].config, **config}


def sidecar_path(path: str | Path) -> Path:
    """``program.json`` -> ``program.opto.json`` (next to the file DSPy writes)."""
    path = Path(path)
    return path.with_name(path.stem + ".opto.json")


def save_optimized(program: Any, path: str | Path) -> Path:
    """``program.save(path)`` plus the sidecar with what DSPy's JSON cannot hold; returns the sidecar path."""
    path = Path(path)
    program.save(str(path))
    side = sidecar_path(path)
    side.write_text(json.dumps(ProgramParameters(program).sidecar(), indent=1, ensure_ascii=False), encoding="utf-8")
    return side


def load_optimized(program: Any, path: str | Path, **load_kwargs: Any) -> Any:
    """Load what `save_optimized` (or `OptoTeleprompter`) wrote into a freshly built ``program``.

    ``path`` is the file given to ``program.save`` (its state is loaded with ``program.load``),
    and its sidecar ``<stem>.opto.json`` restores tool code and descriptions and LM settings.
    Either file may be missing, not both. Returns ``program``.
    """
    path = Path(path)
    side = path if path.name.endswith(".opto.json") else sidecar_path(path)
    state = None if path == side else path
    if (state is None or not state.exists()) and not side.exists():
        raise FileNotFoundError(f"neither {path} nor its sidecar {side} exists")
    if state is not None and state.exists():
        program.load(str(state), **load_kwargs)
    if side.exists():
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{side} is not valid JSON: {exc}") from None
        ProgramParameters(program).load_sidecar(data, str(side))
    return program
