"""`DSPyTracer`: DSPy's callback events -> plain records (`records`) -> the builder (`builder`).

DSPy calls the start handlers *before* it sets the active call id, so ``ACTIVE_CALL_ID`` read there
is the caller's id: that gives the call tree, also in ``ParallelExecutor`` threads (which carry the
id over). The tracer only translates: it reads what the graph needs off the DSPy objects (names,
signatures, model settings, a tool's source) and keeps no DSPy object past the event. Nothing it
does may break the user's program: every handler runs under one guard that logs a failure and
keeps it in ``tracer.errors`` (and in the run's ``meta["trace_errors"]``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any, Iterator

import dspy
from dspy.utils.callback import ACTIVE_CALL_ID, BaseCallback

from opto_adapters.dspy.parameters import ProgramParameters, module_path, sub_modules
from opto_adapters.dspy.tracing import records
from opto_adapters.dspy.tracing.builder import GraphBuilder, Run, messages_text
from opto_core.kernel.code import SourceUnavailable, function_source
from opto_core.kernel.graph import Graph
from opto_core.kernel.provenance import tagged_node, untag

log = logging.getLogger("opto.dspy")

#: LM settings never copied into a graph.
_SECRET_SETTINGS = ("api_key", "api_base", "base_url")


def field_renderings(value: Any) -> list[str]:
    """The texts DSPy's chat and JSON adapters write for a typed value put into an input field: its JSON
    (or ``str``) as ``format_field_value`` gives it, and, for a list put into a ``str`` field, DSPy's
    numbered list (``[1] «...»``)."""
    from dspy.adapters.utils import format_field_value
    from pydantic.fields import FieldInfo

    texts = []
    for annotation in (type(value), str):
        try:
            text = format_field_value(FieldInfo(annotation=annotation), value)
        except Exception:  # a value DSPy cannot format: the core's own renderings still apply
            continue
        if isinstance(text, str) and text not in texts:
            texts.append(text)
    return texts


def untag_prediction(prediction: Any) -> Any:
    """Replace tagged values in a Prediction's fields by plain ones (in place); returns it."""
    if isinstance(prediction, dspy.Example):
        for key, value in prediction.items():
            if tagged_node(value) is not None:
                prediction[key] = untag(value)
    return prediction


def node_names(program: Any, parameters: ProgramParameters | None) -> dict[int, str]:
    """``{id(module, predictor or tool): name}`` for naming graph nodes (the root has none)."""
    names: dict[int, str] = {}
    if program is not None:
        for path, module in sub_modules(program):
            if path != "self":
                names[id(module)] = module_path(path)
    if parameters is not None:
        names.update(parameters.names_by_id())
    return names


def bound_inputs(instance: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """A module call's arguments by name (``forward``'s parameter names; ``argN`` when unknown)."""
    args, kwargs = tuple(inputs.get("args") or ()), dict(inputs.get("kwargs") or {})
    if not args:
        return kwargs
    try:
        bound = inspect.signature(instance.forward).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    result: dict[str, Any] = {}
    for key, value in bound.items():
        if isinstance(value, dict) and key not in kwargs and key == "kwargs":
            result.update(value)
        elif isinstance(value, tuple) and key == "args":
            result.update({f"arg{i}": a for i, a in enumerate(value)})
        else:
            result[key] = value
    return result


def _signature_text(signature: Any) -> str:
    try:
        return signature.signature  # "question -> answer"
    except AttributeError:
        return str(signature)


def _class_doc(instance: Any) -> str:
    """The first paragraph of the module class's own docstring (not an inherited one)."""
    return inspect.cleandoc(type(instance).__dict__.get("__doc__") or "").split("\n\n")[0]


class DSPyTracer(BaseCallback):
    """Records DSPy runs as OPTO graphs (``tracer.graphs``, one per top-level call).

    Use it like any DSPy callback: ``dspy.configure(callbacks=[DSPyTracer(program)])`` or
    ``with dspy.context(callbacks=[tracer]): ...``. Given the ``program`` (or its
    `ProgramParameters`), nodes get the predictors' names and the parameter nodes that fed them.
    """

    def __init__(
        self,
        program: Any = None,
        *,
        parameters: ProgramParameters | None = None,
        name: str | None = None,
        keep: int | None = 1000,
        names: dict[int, str] | None = None,
    ) -> None:
        if parameters is None and program is not None:
            parameters = ProgramParameters(program)
        self.parameters = parameters
        program = program if program is not None else (parameters.program if parameters else None)
        self.root_name = name or (type(program).__name__ if program is not None else "program")
        self._names = dict(names) if names is not None else node_names(program, parameters)
        self.builder = GraphBuilder(
            self.root_name,
            parameter_index=parameters.index if parameters else None,
            framework_version=getattr(dspy, "__version__", "?"),
            keep=keep,
            renderers=[field_renderings],
        )
        self.errors: list[str] = []

    @property
    def graphs(self) -> list[Graph]:
        """The graphs of the finished top-level calls, oldest first (the last ``keep``)."""
        return self.builder.graphs

    def begin(self, inputs: dict[str, Any]) -> tuple[Run, dict[str, Any]]:
        """Start a run for the next top-level call in this thread; returns it and the traced inputs
        (pass them to the program, so the first predictors find them by identity)."""
        return self.builder.begin(inputs)

    # ----- the one guard ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self, where: str) -> Iterator[None]:
        """Tracing must never break the program: a failure is logged and kept, never raised."""
        try:
            yield
        except Exception as exc:
            message = f"{where}: {type(exc).__name__}: {exc}"
            log.warning("opto DSPy tracer: %s", message)
            self.errors.append(message)

    def _end(self, where: str, call_id: str, outputs: Any, exception: BaseException | None) -> None:
        with self._guard(where):
            fields = dict(outputs.items()) if isinstance(outputs, dspy.Example) else None
            tagged = self.builder.feed(records.CallEnded(call_id, outputs, fields, exception))
            if tagged:
                for key, value in tagged.items():  # later steps find these values by identity
                    outputs[key] = value

    # ----- modules and predictors --------------------------------------------------------------------
    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._guard("on_module_start"):
            self.builder.feed(self._module_record(call_id, instance, inputs))

    def _module_record(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> records.ModuleStarted:
        common = dict(
            call_id=call_id,
            caller_id=ACTIVE_CALL_ID.get(),
            type_name=type(instance).__name__,
            inputs=bound_inputs(instance, inputs),
            name=self._names.get(id(instance)),
        )
        if isinstance(instance, dspy.Predict):
            signature = getattr(instance, "signature", None)
            return records.ModuleStarted(
                kind=records.PREDICT,
                owner=id(instance),
                signature=_signature_text(signature),
                output_fields=tuple(getattr(signature, "output_fields", {}) or ()),
                **common,
            )
        if isinstance(instance, dspy.ReAct):
            return records.ModuleStarted(
                kind=records.REACT, chooser=id(getattr(instance, "react", None)), doc=_class_doc(instance), **common
            )
        return records.ModuleStarted(kind=records.MODULE, doc=_class_doc(instance), **common)

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._end("on_module_end", call_id, outputs, exception)

    # ----- adapter and LM ----------------------------------------------------------------------------
    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._guard("on_adapter_format_start"):
            self.builder.feed(records.FormatStarted(call_id, ACTIVE_CALL_ID.get(), type(instance).__name__))

    def on_adapter_format_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._end("on_adapter_format_end", call_id, outputs, exception)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._guard("on_lm_start"):
            settings = {**getattr(instance, "kwargs", {}), **(inputs.get("kwargs") or {})}
            settings = {k: v for k, v in settings.items() if k not in _SECRET_SETTINGS}
            messages = inputs.get("messages") or inputs.get("prompt")
            self.builder.feed(
                records.LMStarted(
                    call_id,
                    ACTIVE_CALL_ID.get(),
                    str(getattr(instance, "model", type(instance).__name__)),
                    settings,
                    messages_text(messages),
                )
            )

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._end("on_lm_end", call_id, outputs, exception)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._guard("on_adapter_parse_start"):
            self.builder.feed(records.ParseStarted(call_id, ACTIVE_CALL_ID.get(), type(instance).__name__))

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._end("on_adapter_parse_end", call_id, outputs, exception)

    # ----- tools -------------------------------------------------------------------------------------
    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._guard("on_tool_start"):
            try:
                source: str | None = function_source(getattr(instance, "func", None))
            except (SourceUnavailable, TypeError, AttributeError):
                source = None
            self.builder.feed(
                records.ToolStarted(
                    call_id,
                    ACTIVE_CALL_ID.get(),
                    getattr(instance, "name", None) or type(instance).__name__,
                    dict(inputs.get("kwargs") or {}),
                    owner=id(instance),
                    desc=getattr(instance, "desc", "") or "",
                    source=source,
                )
            )

    def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self._end("on_tool_end", call_id, outputs, exception)
