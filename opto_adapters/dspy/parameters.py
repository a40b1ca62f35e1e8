"""The trainable parts of a DSPy program as OPTO parameters: discovery, bindings, deployment.

Per predictor (names from ``program.named_predictors()``, so two predictors with identical
signatures never share a name): ``<p>.instructions`` and ``<p>.fields.<f>.desc`` (text),
``<p>.demos`` (json), ``<p>.lm.temperature`` / ``<p>.lm.max_tokens`` (numbers with bounds).
Per tool (``dspy.ReAct`` tools and any ``dspy.Tool`` attribute): ``<path>.code`` (the Python
function) and ``<path>.desc`` (text).

`ProgramParameters` is the kit's `opto_core.kernel.binding.BoundParameters` (stable `Parameter`
objects, one include/exclude rule, validated ordered writes with rollback, snapshot/restore),
filled with the bindings of ``bindings.py``. What DSPy's own ``program.save`` cannot hold (LM
settings in ``Predict.config``, tool code and descriptions) goes to a sidecar ``<stem>.opto.json``,
an ``opto-values/1`` file; `apply_values` writes any such file into a freshly built program.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Iterable

import dspy

from opto_adapters.dspy.bindings import (
    UNSET_DEFAULTS,
    DemosBinding,
    LMConfigBinding,
    LMSettingBinding,
    SignatureBinding,
    ToolCodeBinding,
    ToolDescBinding,
)
from opto_core.engine.target import BoundTarget
from opto_core.kernel.binding import BoundParameters, UnknownParameters, select
from opto_core.kernel.code import (
    SourceUnavailable,
    function_source,
    keeps_signature_bindings,
)
from opto_core.kernel.parameters import InvalidValue, Parameter
from opto_core.kernel.ranges import range_for
from opto_core.kernel.values import (
    SavedValues,
    apply_saved,
    document,
    from_document,
)

FRAMEWORK = "dspy"
#: The sidecar format before ``opto-values/1`` (still read by `load_optimized`).
SIDECAR_FORMAT = "opto-dspy/1"
#: Bounds of LM settings the core's range rules (`opto_core.kernel.ranges.range_for`) do not cover;
#: ``lm_bounds=`` overrides both.
DEFAULT_LM_BOUNDS: dict[str, tuple[float, float]] = {"temperature": (0.0, 2.0), "max_tokens": (16, 16384)}
_DEMO_EXTRA_KEYS = {"augmented"}
#: Attributes optimizers attach to a compiled program (results, not structure): never searched for parts.
RESULT_ATTRIBUTES = {
    "candidate_programs",
    "opto_history",
    "opto_result",
    "trial_logs",
    "detailed_results",
    "score",
    "opto_report",
}

__all__ = [
    "DEFAULT_LM_BOUNDS",
    "ProgramParameters",
    "UNSET_DEFAULTS",
    "bound_parameters",
    "module_path",
    "parameters_of",
    "sub_modules",
]


def module_path(path: str, root: str = "") -> str:
    """``self.agent.tools[search]`` -> ``agent.tools.search``; ``self`` -> ``root``."""
    if path == "self":
        return root
    if path.startswith("self."):
        path = path[5:]
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path)
    return path.strip(".")


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


class ProgramParameters(BoundParameters):
    """Every parameter of one DSPy program, bound to the live objects (write-back with undo).

    ``include`` / ``exclude`` are names or globs (``*.demos``), with the kit's rule
    (`opto_core.kernel.binding.select`): what is left out stays in the graph, frozen; a pattern that
    matches nothing is an error listing the real names.
    """

    def __init__(
        self,
        program: Any,
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        optimize_lm_settings: bool = True,
        optimize_demos: bool = True,
        lm_bounds: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        if not isinstance(program, dspy.Module):
            raise TypeError(f"expected a dspy.Module (a DSPy program), got {type(program).__name__}")
        self.program = program
        self.optimize_lm_settings = optimize_lm_settings
        self.optimize_demos = optimize_demos
        self.user_bounds = dict(lm_bounds or {})
        self.lm_bounds = {**DEFAULT_LM_BOUNDS, **self.user_bounds}
        self.predictors: list[tuple[str, Any]] = [(predictor_name(n), p) for n, p in program.named_predictors()]
        if not self.predictors:
            raise ValueError(
                f"the program {type(program).__name__} has no predictors (dspy.Predict, ChainOfThought, ReAct, ...) "
                "to optimize; note that sub-modules marked compiled (_compiled=True) are frozen by DSPy"
            )
        self.skipped: dict[str, str] = {}  # parameters that could not be made, and why
        self._react_of_tool: dict[int, tuple[str, Any]] = {}
        self.tools: list[tuple[str, Any]] = self._find_tools()
        #: for the tracer: id(predictor or tool) -> [(stage, arg, Parameter)]; stage: format | lm | tool
        self._links: dict[int, list[tuple[str, str, Parameter]]] = {}
        super().__init__()
        for name, predictor in self.predictors:
            self._predictor(name, predictor)
        for path, tool in self.tools:
            self._tool(path, tool)
        if include is not None or exclude is not None:
            self.freeze_except(select(self.names(), include, exclude))

    # ----- discovery -----------------------------------------------------------------------------
    def _bind(self, parameter: Parameter, binding: Any, owner: Any, stage: str, arg: str) -> None:
        if parameter.name in self:  # two paths with one name: refuse to guess
            raise ValueError(f"two parameters of the program would both be named {parameter.name!r}")
        self.add(parameter, binding)
        self._links.setdefault(id(owner), []).append((stage, arg, parameter))

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

    def _predictor(self, name: str, predictor: Any) -> None:
        self._instructions(name, predictor)
        for field_name in predictor.signature.output_fields:
            binding = SignatureBinding(predictor, field_name)
            self._bind(
                Parameter(
                    f"{name}.fields.{field_name}.desc",
                    "text",
                    binding.read(),
                    description=f"the description of the output field `{field_name}` shown in the prompt (empty: none)",
                    meta={"field": field_name},
                ),
                binding,
                predictor,
                "format",
                f"{field_name}.desc",
            )
        self._demos(name, predictor)
        if self.optimize_lm_settings:
            self._lm_setting(name, predictor, "temperature", "float")
            self._lm_setting(name, predictor, "max_tokens", "int")
        self._lm_config(name, predictor)

    def _instructions(self, name: str, predictor: Any) -> None:
        tools = self._tools_of_react_predictor(predictor)

        def check(value: str) -> str:
            if not value.strip():
                raise ValueError("the instructions must not be empty")
            missing = [t.name for t in tools if t.name not in value]
            if missing:
                raise ValueError(
                    f"the ReAct instructions must keep listing the tools {missing} (they are the "
                    "only tools the agent can call)"
                )
            return value

        description = "the task instructions of this predictor (the objective in its prompt)"
        if tools:
            description = (
                "the ReAct agent's instructions; they list the tools with their descriptions "
                "(a tool's .desc parameter rewrites its line)"
            )
        binding = SignatureBinding(predictor)
        self._bind(
            Parameter(f"{name}.instructions", "text", binding.read(), description=description, checks=[check]),
            binding,
            predictor,
            "format",
            "instructions",
        )

    def _demos(self, name: str, predictor: Any) -> None:
        allowed = set(predictor.signature.fields) | _DEMO_EXTRA_KEYS
        inputs = set(predictor.signature.input_fields)
        binding = DemosBinding(predictor)
        try:
            value = binding.read()
        except (TypeError, ValueError) as exc:
            self.skipped[f"{name}.demos"] = f"the demos hold values that are not JSON ({exc})"
            return

        def check(value: list[Any]) -> list[dict[str, Any]]:
            for index, demo in enumerate(value):
                if not isinstance(demo, dict) or not demo:
                    raise ValueError(f"demo {index} must be a non-empty JSON object of field values")
                unknown = sorted(set(demo) - allowed)
                if unknown:
                    raise ValueError(
                        f"demo {index} has keys {unknown} that are not fields of the signature "
                        f"(fields: {sorted(allowed - _DEMO_EXTRA_KEYS)})"
                    )
                if not inputs & set(demo):
                    raise ValueError(f"demo {index} has none of the input fields {sorted(inputs)}")
            return value

        self._bind(
            Parameter(
                f"{name}.demos",
                "json",
                value,
                trainable=self.optimize_demos,
                checks=[check],
                description="few-shot examples shown before the input: a list of objects with the "
                f"signature's fields ({', '.join(predictor.signature.fields)})",
            ),
            binding,
            predictor,
            "format",
            "demos",
        )

    def _lm_setting(self, name: str, predictor: Any, key: str, kind: str) -> None:
        lower, upper = self.lm_bounds[key]
        binding = LMSettingBinding(predictor, key, kind)
        current, known = binding.effective()
        why = ""
        if key not in self.user_bounds:  # the core's rule for this setting (opto_core.kernel.ranges)
            lm = predictor.lm or dspy.settings.lm
            rule = range_for(key, current if known else None, model=getattr(lm, "model", None))
            if rule is not None:
                lower, upper, why = rule.lower, rule.upper, f"; range: {rule.why}"
        shown = current if known and current is not None else UNSET_DEFAULTS[key]
        lower, upper = min(lower, shown), max(upper, shown)  # the value shown (chosen or default) stays valid
        label = {"temperature": "the sampling temperature", "max_tokens": "the most tokens the LM may generate"}[key]
        description = f"{label} of this predictor's LM calls"
        if not known:
            description += f" (unset: the provider's default applies; shown as {UNSET_DEFAULTS[key]})"
        description += why
        self._bind(
            Parameter(
                f"{name}.lm.{key}",
                kind,
                binding.read(),
                description=description,
                lower=lower,
                upper=upper,
                meta={"unset": not known},
            ),
            binding,
            predictor,
            "lm",
            key,
        )

    def _lm_config(self, name: str, predictor: Any) -> None:
        owned = tuple(DEFAULT_LM_BOUNDS) if self.optimize_lm_settings else ()
        binding = LMConfigBinding(predictor, owned)
        try:
            value = binding.read()
        except (TypeError, ValueError) as exc:
            self.skipped[f"{name}.lm.config"] = f"the LM config holds values that are not JSON ({exc})"
            return

        def check(value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise ValueError("the LM config must be a JSON object of settings")
            return value

        self.add(
            Parameter(
                f"{name}.lm.config",
                "json",
                value,
                trainable=False,
                checks=[check],
                description="the other LM settings of this predictor (DSPy's Predict.config: n, stop, "
                "...): kept and deployed, never optimized",
            ),
            binding,
        )

    def _tools_of_react_predictor(self, predictor: Any) -> list[Any]:
        for _, react in self._react_of_tool.values():
            if getattr(react, "react", None) is predictor:
                return [t for t in react.tools.values() if t.name != "finish"]
        return []

    def _tool(self, path: str, tool: Any) -> None:
        label = path or tool.name
        react = self._react_of_tool.get(id(tool))
        original = tool.func
        try:
            source = function_source(original)
        except (SourceUnavailable, TypeError, AttributeError):
            source = None
            self.skipped[f"{label}.code"] = (
                "the tool's function has no readable Python source (a builtin or a callable object)"
            )
        if source is not None:
            check = keeps_signature_bindings(original)  # the arguments the LM is shown come from the signature
            try:
                code = Parameter(
                    f"{label}.code",
                    "code",
                    source,
                    checks=[check],
                    origin=original,
                    description=f"the Python source of the tool `{tool.name}` (called with the LM's arguments)",
                )
            except InvalidValue as exc:  # a lambda: its source is an expression, not one function
                self.skipped[f"{label}.code"] = exc.reason
            else:
                self._bind(code, ToolCodeBinding(tool, original, f"{label}.code"), tool, "tool", "__code")

        def check_desc(value: str) -> str:
            if not value.strip():
                raise ValueError("a tool description must not be empty")
            return value

        where = " (ReAct lists it in the agent's instructions)" if react is not None else ""
        binding = ToolDescBinding(tool, react[1] if react is not None else None)
        parameter = Parameter(
            f"{label}.desc",
            "text",
            binding.read(),
            checks=[check_desc],
            description=f"the description of the tool `{tool.name}` shown to the LM{where}",
            meta={"react": react[0] if react else None},
        )
        self._bind(parameter, binding, tool, "format", f"tools.{tool.name}.desc")  # read by prompts, not the tool
        if react is not None:  # ReAct shows the description in its react predictor's prompt
            self._links.setdefault(id(react[1].react), []).append(("format", f"tools.{tool.name}.desc", parameter))

    # ----- for the tracer ----------------------------------------------------------------------------
    def index(self) -> dict[int, list[tuple[str, str, Parameter]]]:
        """``{id(owner): [(stage, arg, Parameter)]}``: which parameters feed a predictor's prompt
        (``format``), its LM call (``lm``) or a tool (``tool``). The same objects every call, values refreshed."""
        self.parameters()
        return self._links

    def names_by_id(self) -> dict[int, str]:
        """``{id(predictor or tool): name}`` for naming graph nodes."""
        names = {id(p): n for n, p in self.predictors}
        names.update({id(t): (path or t.name) for path, t in self.tools})
        return names

    # ----- deployment ----------------------------------------------------------------------------------
    def sidecar(self) -> dict[str, Any]:
        """Every value (``opto-values/1``), the LM configs DSPy's own JSON does not keep included."""
        return document(
            self.values(trainable_only=False),
            {
                "framework": FRAMEWORK,
                "framework_version": getattr(dspy, "__version__", "?"),
                "program": type(self.program).__name__,
            },
        )

    def load_sidecar(self, data: Any, source: str = "sidecar", parameters: Any = None) -> dict[str, Any]:
        """Validate and write back every value of a sidecar (old ``opto-dspy/1`` or ``opto-values/1``);
        ``parameters`` are your own `Parameter` objects saved with it."""
        if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
            saved = SavedValues(
                data.get("values") or {}, {"framework": FRAMEWORK, "lm_config": data.get("lm_config") or {}}
            )
        else:
            saved = from_document(data, source)
        values = {**self._old_lm_config(saved.meta.get("lm_config") or {}), **saved}
        try:
            return apply_saved(self, SavedValues(values, saved.meta), framework=FRAMEWORK, parameters=parameters)
        except UnknownParameters as exc:
            raise UnknownParameters(
                f"{source} names parameters this program does not have (was it saved from a "
                "program of another structure? A Parameter of your own is passed with "
                "parameters=[...]):",
                exc.unknown,
                exc.known,
            ) from None

    def _old_lm_config(self, lm_config: dict[str, Any]) -> dict[str, Any]:
        """Sidecars before ``<p>.lm.config`` kept whole ``Predict.config``s in ``meta["lm_config"]``:
        their values for ``<p>.lm.config`` and the LM-setting parameters."""
        values: dict[str, Any] = {}
        for name, config in lm_config.items():
            config = dict(config)
            for key in DEFAULT_LM_BOUNDS:
                if f"{name}.lm.{key}" in self and key in config:
                    values[f"{name}.lm.{key}"] = config.pop(key)
            if f"{name}.lm.config" in self:
                values[f"{name}.lm.config"] = config
        return values


# ----- discovery, the shape every adapter has ----------------------------------------------------------
def bound_parameters(
    program: Any, *, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, **options: Any
) -> ProgramParameters:
    """Every parameter of a DSPy program with its binding (write-back with undo): a `BoundParameters`.

    ``include``/``exclude``: names or globs, the core's rule (left out: frozen, still in the graph).
    ``options``: ``optimize_lm_settings``, ``optimize_demos``, ``lm_bounds`` (see `ProgramParameters`).
    A `ProgramTarget` gives its own (``include``/``exclude`` then freeze some of them).
    """
    if isinstance(program, BoundTarget):
        bound = program.bound
        if include is not None or exclude is not None:
            bound.freeze_except(select(bound.names(), include, exclude))
        return bound
    return ProgramParameters(program, include=include, exclude=exclude, **options)


def parameters_of(
    program: Any, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None, **options: Any
) -> list[Parameter]:
    """The parameters ``include``/``exclude`` select (see `bound_parameters`), with their current values."""
    bound = bound_parameters(program, **options)
    chosen = select(bound.names(), include, exclude)
    return [p for p in bound.parameters() if p.name in chosen]
