"""What the DSPy tracer copies out of each callback event: plain records, no DSPy object.

DSPy reports every call twice (``on_<kind>_start`` and ``on_<kind>_end``, with a call id); the
callback (`callback.DSPyTracer`) turns each report into one record below and hands it to the
builder (`builder.GraphBuilder`). A record names the objects it concerns by opaque keys
(``owner``: the key under which the program's parameters list what feeds that predictor or tool;
the callback uses ``id(obj)``), so a test can feed the builder hand-made records with any keys.

Kinds of call: ``module`` (any ``dspy.Module``), ``predict`` (a ``dspy.Predict``), ``react`` (a
``dspy.ReAct``, whose tool calls are chosen by its ``react`` predictor), ``format`` and ``parse``
(the adapter turning inputs into messages, and a completion into fields), ``lm`` (the model call)
and ``tool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable

#: The kinds of call a `ModuleStarted` can describe.
MODULE, PREDICT, REACT = "module", "predict", "react"


@dataclass(frozen=True)
class ModuleStarted:
    """A ``dspy.Module`` call began (``dspy.Predict`` and ``dspy.ReAct`` included).

    ``caller_id`` is the call DSPy was running when this one started (``None`` or an id the
    builder never saw: a new top-level run). ``name`` is the module's path in the program
    (``None``: unknown, the type name is used, or the program's name for a top-level call).
    """

    call_id: str
    caller_id: str | None
    kind: str  # MODULE | PREDICT | REACT
    type_name: str
    inputs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    owner: Hashable | None = None  # a predictor's key in the parameter index
    signature: str = ""  # a predictor's signature, "question -> answer"
    output_fields: tuple[str, ...] = ()
    chooser: Hashable | None = None  # a ReAct: the owner key of the predictor that chooses each step
    doc: str = ""  # the first paragraph of the module class's docstring


@dataclass(frozen=True)
class FormatStarted:
    """The adapter (``ChatAdapter``, ``JSONAdapter``...) began building a predictor's messages."""

    call_id: str
    caller_id: str | None
    adapter: str


@dataclass(frozen=True)
class LMStarted:
    """A language-model call began. ``messages`` is the text sent (shown only when no format step
    made it, e.g. an LM called directly from a module); ``settings`` are the call's, secrets removed."""

    call_id: str
    caller_id: str | None
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    messages: str = ""


@dataclass(frozen=True)
class ParseStarted(FormatStarted):
    """The adapter began parsing a completion into the output fields."""


@dataclass(frozen=True)
class ToolStarted:
    """A ``dspy.Tool`` call began with keyword arguments ``args``. ``source`` is the function's code
    (shown when no code parameter feeds the tool), ``None`` when it has none."""

    call_id: str
    caller_id: str | None
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    owner: Hashable | None = None
    desc: str = ""
    source: str | None = None


@dataclass(frozen=True)
class CallEnded:
    """Any call ended: with ``outputs``, or ``error`` when it raised. ``fields`` are the output
    fields when the output is a ``dspy.Prediction`` (``None`` otherwise)."""

    call_id: str
    outputs: Any = None
    fields: dict[str, Any] | None = None
    error: BaseException | None = None


Started = ModuleStarted | FormatStarted | LMStarted | ParseStarted | ToolStarted
Record = Started | CallEnded
