"""OpenTelemetry in and out: recorded spans -> OPTO graphs (`load_spans`), and a graph -> OTLP JSON (`to_spans`).

Most agent frameworks can export OpenTelemetry spans, in one of two vocabularies:

- **OpenInference** (Arize Phoenix; ``openinference-instrumentation-*``): ``openinference.span.kind``
  (LLM, TOOL, CHAIN, RETRIEVER, AGENT, ...), ``llm.input_messages.<i>.message.role|content|tool_calls``,
  ``llm.output_messages...``, ``llm.model_name``, ``llm.invocation_parameters``, ``llm.token_count.*``,
  ``llm.tools.<i>.tool.json_schema``, ``tool.name``, ``input.value``/``output.value``,
  ``retrieval.documents.<i>.document.content``;
- the **GenAI semantic conventions** (OpenTelemetry): ``gen_ai.operation.name`` (chat, execute_tool,
  invoke_agent...), ``gen_ai.request.model``, ``gen_ai.request.temperature``..., ``gen_ai.usage.input_tokens``,
  the messages as ``gen_ai.input.messages``/``gen_ai.output.messages``/``gen_ai.system_instructions``
  (JSON), as the older flattened ``gen_ai.prompt.<i>.*``/``gen_ai.completion.<i>.*``, or as span events
  (``gen_ai.user.message``, ``gen_ai.choice``...); tools as ``gen_ai.tool.name`` and ``gen_ai.tool.call.*``.

An LLM span holds what a gateway sees on the wire (the messages sent, the answer), so each trace
becomes a run of exchanges and goes through the very same graph builder as live traffic
(`opto_core.gateway.graphs`): same nodes, same data-flow edges, same parameters (system prompts found in
the spans, `TrafficParameters.propose`). Tool spans whose results no later LLM call shows, and retriever
spans, become values with data edges from what their input contains; the root span's output (a chain or
agent span) is the run's output.

Spans are read from OTLP JSON (a file, one document per line as collectors' file exporters write, or
the parsed JSON), or straight from the SDK's span objects (``InMemorySpanExporter().get_finished_spans()``).
A span that should carry an LLM call or a tool run but lacks the attributes to read it is skipped and
counted (`Traces.skipped`, by reason), never a crash; spans of other kinds (embeddings, HTTP...) are
counted as ignored.

Export: `to_spans` writes a graph as one OTLP trace (a CHAIN root span, one span per op, with
OpenInference and GenAI attributes, and every data-flow edge as a span link), so a run shows in
Phoenix, Langfuse or any OTLP collector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from opto_core.gateway.graphs import ValueStep, graph_of_run
from opto_core.gateway.recording import INFRASTRUCTURE, OK, Exchange, Run
from opto_core.gateway.wire import CHAT, WireAnswer
from opto_core.kernel.feedback import Feedback
from opto_core.kernel.graph import Graph
from opto_core.kernel.text import as_text

log = logging.getLogger("opto.otel")

LLM, TOOL, CHAIN, RETRIEVER, AGENT = "LLM", "TOOL", "CHAIN", "RETRIEVER", "AGENT"
#: ``gen_ai.operation.name`` -> span kind.
_GENAI_OPERATIONS = {
    "chat": LLM,
    "text_completion": LLM,
    "generate_content": LLM,
    "execute_tool": TOOL,
    "invoke_agent": AGENT,
    "create_agent": AGENT,
}
#: Span kinds read into the graph (the rest are ignored: embeddings, rerankers, HTTP...).
_READ = (LLM, TOOL, CHAIN, RETRIEVER, AGENT)


# ----- spans as plain records ----------------------------------------------------------------------------
@dataclass
class Span:
    """One span, decoded from OTLP JSON or an SDK span: ids as hex, times in ns, plain attributes."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start: int
    end: int
    attributes: dict[str, Any]
    status: int = 0  # 0 unset, 1 ok, 2 error
    status_message: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def kind(self) -> str | None:
        """OpenInference's span kind, or one read from the GenAI conventions; None when neither says."""
        kind = self.attributes.get("openinference.span.kind")
        if isinstance(kind, str) and kind:
            return kind.upper()
        operation = self.attributes.get("gen_ai.operation.name")
        if operation in _GENAI_OPERATIONS:
            return _GENAI_OPERATIONS[operation]
        if any(k.startswith(("gen_ai.prompt.", "gen_ai.input.messages")) for k in self.attributes):
            return LLM
        return None


@dataclass
class SpanTrace:
    """The spans of one trace, for a feedback function: its root, and the root's input and output."""

    trace_id: str
    spans: list[Span]

    @property
    def root(self) -> Span:
        ids = {span.span_id for span in self.spans}
        roots = [span for span in self.spans if not span.parent_id or span.parent_id not in ids]
        return min(roots or self.spans, key=lambda span: span.start)

    @property
    def input(self) -> Any:
        return self.root.attributes.get("input.value")

    @property
    def output(self) -> Any:
        return self.root.attributes.get("output.value")

    def attribute(self, name: str) -> Any:
        """The first value of an attribute, the root span first, then the others in time order."""
        for span in [self.root, *sorted(self.spans, key=lambda s: s.start)]:
            if name in span.attributes:
                return span.attributes[name]
        return None


class Traces(list):
    """Graphs imported from spans (one per trace), with what the import learned on the way.

    ``traces`` (the `SpanTrace` of each graph), ``feedback`` (a `Feedback` or None per graph),
    ``parameters`` (the `TrafficParameters` the graphs were built with: prompts found in the spans),
    ``skipped`` (reason -> count of spans that could not be read), ``ignored`` (spans of other kinds).
    """

    def __init__(self, graphs: Iterable[Graph] = ()) -> None:
        super().__init__(graphs)
        self.traces: list[SpanTrace] = []
        self.runs: list[Run] = []
        self.feedback: list[Feedback | None] = []
        self.parameters: Any = None
        self.skipped: Counter[str] = Counter()
        self.ignored = 0


# ----- reading ------------------------------------------------------------------------------------------
def read_spans(source: Any) -> list[Span]:
    """Every span in ``source``: a path (OTLP JSON, or JSON lines of OTLP documents), an OTLP document
    (``{"resourceSpans": [...]}``), a list of those, or SDK span objects."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read spans from {path}: {exc.strerror or exc}") from None
        try:
            documents: Any = json.loads(text)
        except ValueError:
            try:
                documents = [json.loads(line) for line in text.splitlines() if line.strip()]
            except ValueError as exc:
                raise ValueError(f"{path} is neither OTLP JSON nor JSON lines of OTLP documents: {exc}") from None
        return read_spans(documents)
    if isinstance(source, Mapping):
        if "resourceSpans" not in source and "resource_spans" not in source:
            raise ValueError(
                f"an OTLP JSON document has a 'resourceSpans' list; this one has keys {sorted(source)[:8]}"
            )
        return list(_otlp_spans(source))
    spans: list[Span] = []
    for item in source:
        if isinstance(item, Span):
            spans.append(item)
        elif isinstance(item, Mapping):
            spans.extend(read_spans(item))
        elif hasattr(item, "context") and hasattr(item, "attributes"):
            spans.append(_sdk_span(item))
        else:
            raise TypeError(f"cannot read a span from a {type(item).__name__}")
    return spans


def _otlp_spans(document: Mapping[str, Any]) -> Iterable[Span]:
    for resource in document.get("resourceSpans") or document.get("resource_spans") or []:
        for scope in resource.get("scopeSpans") or resource.get("scope_spans") or []:
            for raw in scope.get("spans") or []:
                if not isinstance(raw, Mapping):
                    continue
                status = raw.get("status") or {}
                code = status.get("code", 0)
                yield Span(
                    _hex_id(raw.get("traceId") or raw.get("trace_id")),
                    _hex_id(raw.get("spanId") or raw.get("span_id")),
                    _hex_id(raw.get("parentSpanId") or raw.get("parent_span_id")),
                    str(raw.get("name") or ""),
                    int(raw.get("startTimeUnixNano") or raw.get("start_time_unix_nano") or 0),
                    int(raw.get("endTimeUnixNano") or raw.get("end_time_unix_nano") or 0),
                    _attributes(raw.get("attributes")),
                    _status_code(code),
                    str(status.get("message") or ""),
                    [
                        (str(e.get("name") or ""), _attributes(e.get("attributes")))
                        for e in raw.get("events") or []
                        if isinstance(e, Mapping)
                    ],
                )


def _status_code(code: Any) -> int:
    """OTLP status codes: 0 unset, 1 ok, 2 error (written as numbers, or as enum names by some exporters)."""
    if isinstance(code, str) and not code.isdigit():
        return {"STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    return int(code or 0)


def _hex_id(value: Any) -> str:
    """An id as lower-case hex: OTLP JSON writes hex; protobuf's JSON mapping writes base64."""
    if not value:
        return ""
    text = str(value)
    if re.fullmatch(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}", text):
        return text.lower()
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return text


def _attributes(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):  # already plain
        return dict(raw)
    result: dict[str, Any] = {}
    for item in raw or []:
        if isinstance(item, Mapping) and "key" in item:
            result[str(item["key"])] = _any_value(item.get("value"))
    return result


def _any_value(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    for key in ("stringValue", "string_value"):
        if key in value:
            return value[key]
    for key in ("intValue", "int_value"):
        if key in value:
            return int(value[key])
    for key in ("doubleValue", "double_value"):
        if key in value:
            return float(value[key])
    for key in ("boolValue", "bool_value"):
        if key in value:
            return bool(value[key])
    for key in ("arrayValue", "array_value"):
        if key in value:
            return [_any_value(v) for v in (value[key] or {}).get("values") or []]
    for key in ("kvlistValue", "kvlist_value"):
        if key in value:
            return _attributes((value[key] or {}).get("values"))
    for key in ("bytesValue", "bytes_value"):
        if key in value:
            return value[key]
    return None


def _sdk_span(span: Any) -> Span:
    """An OpenTelemetry SDK span (``ReadableSpan``), read through its public attributes."""
    context = span.context
    parent = getattr(span, "parent", None)
    status = getattr(span, "status", None)
    code = getattr(getattr(status, "status_code", None), "value", 0) if status is not None else 0
    return Span(
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
        f"{parent.span_id:016x}" if parent else "",
        str(span.name),
        int(span.start_time or 0),
        int(span.end_time or 0),
        dict(span.attributes or {}),
        int(code or 0),
        str(getattr(status, "description", "") or ""),
        [(str(e.name), dict(e.attributes or {})) for e in getattr(span, "events", ()) or ()],
    )


def spans_to_otlp(spans: Iterable[Any], service_name: str = "unknown_service") -> dict[str, Any]:
    """SDK spans (or `Span` records) as one OTLP JSON document, e.g. to save an in-memory export."""
    records = read_spans(list(spans))
    return _document([_otlp_span(span) for span in records], service_name, "opto_core.otel")


# ----- spans -> graphs ------------------------------------------------------------------------------------
def load_spans(
    source: Any,
    *,
    feedback_attribute: str | Iterable[str] | None = None,
    feedback_text_attribute: str | None = None,
    feedback_fn: Callable[[SpanTrace], Any] | None = None,
    parameters: Any = None,
    propose: bool = True,
    min_runs: int = 2,
    settings: Iterable[str] = (),
    tools: Iterable[str] = (),
) -> Traces:
    """Read spans (see `read_spans` for ``source``) into one OPTO graph per trace (a `Traces` list).

    Feedback per trace: ``feedback_fn(trace)`` (anything `Feedback.coerce` accepts), else the first
    span attribute named ``feedback_attribute`` (a number is a score, text is feedback text; several
    names may be given, the first found wins), with ``feedback_text_attribute`` as its text.
    ``parameters`` (a `TrafficParameters`) declares prompts to find; with ``propose`` the system prompts
    that appear in ``min_runs`` traces become parameters too (`TrafficParameters.propose`).
    """
    from opto_core.gateway.parameters import TrafficParameters

    traces = Traces()
    traces.parameters = parameters if parameters is not None else TrafficParameters()
    by_trace: dict[str, list[Span]] = {}
    for span in read_spans(source):
        by_trace.setdefault(span.trace_id, []).append(span)
    built: list[tuple[SpanTrace, Run, list[Any], Any]] = []
    for trace_id, spans in by_trace.items():
        trace = SpanTrace(trace_id, sorted(spans, key=lambda s: (s.start, s.end)))
        run, steps, output = _trace_run(trace, traces)
        if run.exchanges:
            built.append((trace, run, steps, output))
        else:
            traces.skipped["trace without a readable LLM span"] += 1
    if propose:
        traces.parameters.propose([run for _, run, _, _ in built], min_runs=min_runs, settings=settings, tools=tools)
    for trace, run, steps, output in built:
        graph = graph_of_run(
            run,
            traces.parameters,
            output=output,
            steps=steps,
            meta={"trace_id": trace.trace_id, "source": "opentelemetry"},
        )
        feedback = _feedback(trace, feedback_attribute, feedback_text_attribute, feedback_fn)
        if feedback is not None:
            graph.meta["feedback"] = feedback.to_dict()
        traces.append(graph)
        traces.traces.append(trace)
        traces.runs.append(run)
        traces.feedback.append(feedback)
    if traces.skipped:
        log.warning(
            "opto otel: skipped %d spans that lack the attributes to read them (%s)",
            sum(traces.skipped.values()),
            ", ".join(f"{n} {why}" for why, n in traces.skipped.items()),
        )
    return traces


def _trace_run(trace: SpanTrace, traces: Traces) -> tuple[Run, list[Exchange | ValueStep], Any]:
    """A trace as a run of exchanges (its LLM spans), the value steps of its other spans, and its output."""
    run = Run(f"trace-{trace.trace_id[:16]}", trace.spans[0].start / 1e9, closed=True)
    tools: list[Span] = []
    values: list[ValueStep] = []
    for span in trace.spans:
        kind = span.kind
        if kind not in _READ:
            traces.ignored += 1
            continue
        if kind == LLM:
            exchange = _exchange(span, len(run.exchanges) + 1, run.id)
            if exchange is None:
                traces.skipped["LLM span without input messages"] += 1
            else:
                run.exchanges.append(exchange)
        elif kind == TOOL:
            tools.append(span)
        elif kind == RETRIEVER:
            documents = _documents(span)
            if documents:
                values.append(
                    ValueStep(
                        f"retriever.{span.name}", documents, _text(span.attributes.get("input.value")), span.start / 1e9
                    )
                )
            else:
                traces.skipped["retriever span without documents"] += 1
    answered = {
        message.call_ids[0]
        for e in run.exchanges
        if (r := e.parsed()) is not None
        for message in r.messages
        if message.role == "tool" and message.call_ids
    }
    for span in tools:
        name = span.attributes.get("tool.name") or span.attributes.get("gen_ai.tool.name") or span.name
        result = span.attributes.get("output.value", span.attributes.get("gen_ai.tool.call.result"))
        call_id = span.attributes.get("gen_ai.tool.call.id") or span.attributes.get("tool_call.id")
        if result is None:
            traces.skipped["tool span without a result"] += 1
        elif call_id not in answered:  # results a later LLM call shows are read from that call
            arguments = span.attributes.get("input.value", span.attributes.get("gen_ai.tool.call.arguments"))
            values.append(ValueStep(f"tool.{name}", _text(result), _text(arguments), span.start / 1e9))
    root = trace.root
    output = root.attributes.get("output.value") if root.kind in (CHAIN, AGENT) else None
    steps: list[Exchange | ValueStep] = sorted([*run.exchanges, *values], key=lambda step: step.started)
    return run, steps, _text(output) if output is not None else None


def _exchange(span: Span, number: int, run_id: str) -> Exchange | None:
    attributes = span.attributes
    messages = _input_messages(span)
    if not messages:
        return None
    model = str(
        attributes.get("llm.model_name")
        or attributes.get("gen_ai.request.model")
        or attributes.get("gen_ai.response.model")
        or ""
    )
    body: dict[str, Any] = {"model": model, "messages": messages}
    invocation = _json(attributes.get("llm.invocation_parameters"))
    if isinstance(invocation, Mapping):
        body.update({k: v for k, v in invocation.items() if k not in ("messages", "model", "tools", "stream")})
    for key in ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed"):
        value = attributes.get(f"gen_ai.request.{key}")
        if value is not None:
            body[key] = value
    tools = _tools(attributes)
    if tools:
        body["tools"] = tools
    answer = _answer(span, model)
    failed = span.status == 2
    return Exchange(
        number,
        run_id,
        CHAT,
        "/chat/completions",
        span.start / 1e9,
        request=body,
        status=500 if failed else 200,
        answer=answer.to_dict() if answer is not None else None,
        outcome=INFRASTRUCTURE if failed or answer is None else OK,
        error=(span.status_message or "the span's status is ERROR")
        if failed
        else ("" if answer is not None else "the span has no output"),
        seconds=max(span.end - span.start, 0) / 1e9,
    )


def _input_messages(span: Span) -> list[dict[str, Any]]:
    attributes = span.attributes
    messages = _indexed(attributes, "llm.input_messages.", _openinference_message)
    if messages:
        return messages
    if "gen_ai.input.messages" in attributes:
        messages = []
        system = _json(attributes.get("gen_ai.system_instructions"))
        if system:
            messages.append({"role": "system", "content": _parts_text(system)})
        for message in _json(attributes["gen_ai.input.messages"]) or []:
            messages.extend(_genai_message(message))
        return messages
    messages = _indexed(attributes, "gen_ai.prompt.", _flat_message)
    if messages:
        return messages
    events = [_event_message(name, data) for name, data in span.events if name in _EVENT_ROLES]
    if events:
        return [m for m in events if m is not None]
    raw = _json(attributes.get("input.value"))
    if isinstance(raw, Mapping) and isinstance(raw.get("messages"), list):
        return [dict(m) for m in raw["messages"] if isinstance(m, Mapping)]
    return []


def _answer(span: Span, model: str) -> WireAnswer | None:
    attributes = span.attributes
    usage = {
        "prompt_tokens": int(
            attributes.get("llm.token_count.prompt")
            or attributes.get("gen_ai.usage.input_tokens")
            or attributes.get("gen_ai.usage.prompt_tokens")
            or 0
        ),
        "completion_tokens": int(
            attributes.get("llm.token_count.completion")
            or attributes.get("gen_ai.usage.output_tokens")
            or attributes.get("gen_ai.usage.completion_tokens")
            or 0
        ),
    }
    outputs = _indexed(attributes, "llm.output_messages.", _openinference_message)
    if not outputs and "gen_ai.output.messages" in attributes:
        outputs = [m for message in _json(attributes["gen_ai.output.messages"]) or [] for m in _genai_message(message)]
    if not outputs:
        outputs = _indexed(attributes, "gen_ai.completion.", _flat_message)
    if not outputs:
        choices = [data for name, data in span.events if name == "gen_ai.choice"]
        outputs = [
            m
            for m in (_event_message("gen_ai.assistant.message", _json(c.get("message")) or c) for c in choices)
            if m is not None
        ]
    if not outputs:
        raw = _json(attributes.get("output.value"))
        if isinstance(raw, Mapping) and raw.get("choices"):
            from opto_core.gateway.wire import parse_answer

            try:
                return parse_answer(CHAT, raw)
            except ValueError:
                return None
        return None
    message = outputs[0]
    calls = [
        {
            "id": str(c.get("id") or ""),
            "name": str((c.get("function") or {}).get("name") or ""),
            "arguments": str((c.get("function") or {}).get("arguments") or ""),
        }
        for c in message.get("tool_calls") or []
    ]
    text = message.get("content")
    return WireAnswer(text if isinstance(text, str) else (None if calls else ""), calls, usage, model)


def _indexed(
    attributes: Mapping[str, Any], prefix: str, build: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Flattened ``<prefix><i>.<rest>`` attributes -> one dict per index, in index order."""
    groups: dict[int, dict[str, Any]] = {}
    for key, value in attributes.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if index.isdigit():
            groups.setdefault(int(index), {})[rest] = value
    return [build(groups[index]) for index in sorted(groups)]


#: Where a flattened message keeps its parts: OpenInference (``llm.input_messages.<i>.message.role``,
#: ``...message.tool_calls.<j>.tool_call.function.name``) and the older GenAI (``gen_ai.prompt.<i>.role``).
_OPENINFERENCE_KEYS = {
    "role": "message.role",
    "content": "message.content",
    "calls": "message.tool_calls.",
    "id": "tool_call.id",
    "name": "tool_call.function.name",
    "arguments": "tool_call.function.arguments",
    "answers": "message.tool_call_id",
}
_GENAI_KEYS = {
    "role": "role",
    "content": "content",
    "calls": "tool_calls.",
    "id": "id",
    "name": "name",
    "arguments": "arguments",
    "answers": "tool_call_id",
}


def _openinference_message(fields: dict[str, Any]) -> dict[str, Any]:
    message = _flat_message(fields, _OPENINFERENCE_KEYS)
    if message["content"] is None:  # multimodal: message.contents.<j>.message_content.text
        parts = [v for k, v in sorted(fields.items()) if k.startswith("message.contents.") and k.endswith(".text")]
        message["content"] = "\n".join(str(p) for p in parts) if parts else None
    return message


def _flat_message(fields: dict[str, Any], keys: Mapping[str, str] = _GENAI_KEYS) -> dict[str, Any]:
    """One message from its flattened attributes (``keys``: where each part is, see `_OPENINFERENCE_KEYS`)."""
    message: dict[str, Any] = {"role": fields.get(keys["role"], "user"), "content": fields.get(keys["content"])}
    calls = _indexed(
        fields,
        keys["calls"],
        lambda f: {
            "id": f.get(keys["id"], ""),
            "type": "function",
            "function": {"name": f.get(keys["name"], ""), "arguments": f.get(keys["arguments"], "")},
        },
    )
    if calls:
        message["tool_calls"] = calls
    if fields.get(keys["answers"]):
        message["tool_call_id"] = fields[keys["answers"]]
    return message


def _genai_message(message: Any) -> list[dict[str, Any]]:
    """A GenAI ``{"role", "parts": [...]}`` message as chat messages (a tool response part is its own)."""
    if not isinstance(message, Mapping):
        return []
    role = str(message.get("role") or "user")
    parts = message.get("parts") or []
    calls = [
        {
            "id": str(p.get("id") or ""),
            "type": "function",
            "function": {"name": str(p.get("name") or ""), "arguments": _text(p.get("arguments"))},
        }
        for p in parts
        if isinstance(p, Mapping) and p.get("type") == "tool_call"
    ]
    responses = [
        {"role": "tool", "tool_call_id": str(p.get("id") or ""), "content": _text(p.get("response"))}
        for p in parts
        if isinstance(p, Mapping) and p.get("type") == "tool_call_response"
    ]
    text = _parts_text(parts)
    result: list[dict[str, Any]] = []
    if text or calls or not responses:
        entry: dict[str, Any] = {"role": role, "content": text or None}
        if calls:
            entry["tool_calls"] = calls
        result.append(entry)
    return result + responses


def _parts_text(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    texts = [str(p.get("content") or "") for p in parts or [] if isinstance(p, Mapping) and p.get("type") == "text"]
    return "\n".join(texts)


_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def _event_message(name: str, data: Any) -> dict[str, Any] | None:
    if not isinstance(data, Mapping):
        return None
    message: dict[str, Any] = {"role": _EVENT_ROLES.get(name, "assistant"), "content": data.get("content")}
    calls = _json(data.get("tool_calls"))
    if isinstance(calls, list) and calls:
        message["tool_calls"] = calls
    if name == "gen_ai.tool.message" and data.get("id"):
        message["tool_call_id"] = data["id"]
    return message


def _tools(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for schema in _indexed(attributes, "llm.tools.", lambda f: _json(f.get("tool.json_schema")) or {}):
        spec = schema.get("function", schema) if isinstance(schema, Mapping) else {}
        if spec.get("name"):
            tools.append(
                {"type": "function", "function": {"name": spec["name"], "description": spec.get("description", "")}}
            )
    return tools


def _documents(span: Span) -> str:
    documents = _indexed(span.attributes, "retrieval.documents.", lambda f: {"text": f.get("document.content")})
    texts = [str(d["text"]) for d in documents if d.get("text")]
    if texts:
        return "\n\n".join(texts)
    output = span.attributes.get("output.value")
    return _text(output) if output is not None else ""


def _feedback(
    trace: SpanTrace,
    attribute: str | Iterable[str] | None,
    text_attribute: str | None,
    function: Callable[[SpanTrace], Any] | None,
) -> Feedback | None:
    if function is not None:
        return Feedback.coerce(function(trace))
    names = [attribute] if isinstance(attribute, str) else list(attribute or [])
    score: Any = None
    for name in names:
        score = trace.attribute(name)
        if score is not None:
            break
    text = trace.attribute(text_attribute) if text_attribute else None
    if score is None and text is None:
        return None
    if isinstance(score, str):
        try:
            score = float(score)
        except ValueError:
            text, score = (text or score), None
    return Feedback(None if score is None else float(score), "" if text is None else str(text))


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _text(value: Any) -> str:
    return "" if value is None else as_text(value, default=str)


# ----- graphs -> spans ------------------------------------------------------------------------------------
def to_spans(graph: Graph, *, service_name: str = "opto", trace_id: str | None = None) -> dict[str, Any]:
    """One graph as an OTLP JSON document (``{"resourceSpans": [...]}``) holding one trace.

    A CHAIN root span carries the run (its input, output, parameters as ``opto.parameter.<name>``,
    usage); every op becomes a child span (LLM calls with OpenInference and GenAI attributes, tools,
    other ops as CHAIN), an exception node a span with status ERROR; each data-flow edge between two
    ops is a span link with ``opto.edge.arg``/``opto.edge.via``. Post it to a collector's
    ``/v1/traces`` with ``Content-Type: application/json``.
    """
    trace_id = trace_id or hashlib.sha256(str(graph.meta.get("run_id") or id(graph)).encode()).hexdigest()[:32]
    started = float(graph.meta.get("started") or 0.0)
    start_ns = int(started * 1e9) if started else 0
    duration = float(graph.meta.get("duration_s") or 0.0)
    root_id = _span_id(trace_id, "__root__")
    inputs = [node for node in graph.nodes if node.kind == "input"]
    outputs = graph.outputs
    root_attributes: dict[str, Any] = {
        "openinference.span.kind": CHAIN,
        "opto.graph.format": "opto-graph/1",
        "opto.run_id": str(graph.meta.get("run_id") or ""),
    }
    if inputs:
        root_attributes["input.value"] = _text(inputs[0].value)
    if outputs:
        root_attributes["output.value"] = _text(outputs[0].value)
    for node in graph.parameters:
        root_attributes[f"opto.parameter.{node.name}"] = _text(node.value)
    usage = graph.meta.get("usage") or {}
    for key, name in (("prompt_tokens", "llm.token_count.prompt"), ("completion_tokens", "llm.token_count.completion")):
        if usage.get(key) is not None:
            root_attributes[name] = int(usage[key])
    ops = [node for node in graph.nodes if node.kind in ("op", "exception")]
    end_ns = start_ns + max(int(duration * 1e9), len(ops) * 1000 + 1)
    spans = [
        _raw_span(trace_id, root_id, "", str(graph.meta.get("name") or "opto run"), start_ns, end_ns, root_attributes)
    ]
    span_of = {node.id: _span_id(trace_id, node.id) for node in ops}
    for position, node in enumerate(ops):
        begin = int(float(node.meta.get("started", 0) or 0) * 1e9) or start_ns + position * 1000
        finish = begin + (int(float(node.meta.get("seconds") or 0) * 1e9) or 1000)
        attributes = _op_attributes(graph, node)
        links = [
            {
                "traceId": trace_id,
                "spanId": span_of[edge.id],
                "attributes": _raw_attributes({"opto.edge.arg": edge.arg, "opto.edge.via": edge.via}),
            }
            for edge in node.edges
            if edge.id in span_of
        ]
        status = {"code": 2, "message": _text(node.value)} if node.kind == "exception" else {"code": 1}
        spans.append(
            _raw_span(trace_id, span_of[node.id], root_id, node.name, begin, finish, attributes, status, links)
        )
    return _document(spans, service_name, "opto_core.gateway.otel")


def _op_attributes(graph: Graph, node: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "opto.node.id": node.id,
        "opto.node.kind": node.kind,
        "opto.op_type": node.op_type,
        "output.value": _text(node.value),
    }
    if node.op_type == "llm_call":
        meta = node.meta
        attributes.update(
            {
                "openinference.span.kind": LLM,
                "gen_ai.operation.name": "chat",
                "llm.model_name": str(meta.get("model") or ""),
                "gen_ai.request.model": str(meta.get("model") or ""),
                "llm.invocation_parameters": json.dumps(meta.get("settings") or {}),
            }
        )
        for key, value in (meta.get("settings") or {}).items():
            if key in ("temperature", "top_p", "max_tokens") and isinstance(value, (int, float)):
                attributes[f"gen_ai.request.{key}"] = value
        usage = meta.get("usage") or {}
        for key, names in (
            ("prompt_tokens", ("llm.token_count.prompt", "gen_ai.usage.input_tokens")),
            ("completion_tokens", ("llm.token_count.completion", "gen_ai.usage.output_tokens")),
        ):
            if usage.get(key) is not None:
                for name in names:
                    attributes[name] = int(usage[key])
        position = 0
        for edge in node.edges:
            parent = graph[edge.id]
            role = _role_of_parent(parent, edge.arg)
            if role is None:
                continue
            prefix = f"llm.input_messages.{position}.message."
            attributes[prefix + "role"] = role
            if isinstance(parent.value, list) and role == "assistant":
                for k, call in enumerate(parent.value):
                    if isinstance(call, Mapping):
                        attributes[f"{prefix}tool_calls.{k}.tool_call.id"] = str(call.get("id", ""))
                        attributes[f"{prefix}tool_calls.{k}.tool_call.function.name"] = str(call.get("name", ""))
                        attributes[f"{prefix}tool_calls.{k}.tool_call.function.arguments"] = str(
                            call.get("arguments", "")
                        )
            else:
                attributes[prefix + "content"] = _text(parent.value)
            if role == "tool" and parent.meta.get("call_ids"):
                attributes[prefix + "tool_call_id"] = str(parent.meta["call_ids"][0])
            position += 1
        if isinstance(node.value, list):
            for k, call in enumerate(node.value):
                if isinstance(call, Mapping):
                    prefix = f"llm.output_messages.0.message.tool_calls.{k}.tool_call."
                    attributes[prefix + "id"] = str(call.get("id", ""))
                    attributes[prefix + "function.name"] = str(call.get("name", ""))
                    attributes[prefix + "function.arguments"] = str(call.get("arguments", ""))
        else:
            attributes["llm.output_messages.0.message.content"] = _text(node.value)
        attributes["llm.output_messages.0.message.role"] = "assistant"
    elif node.op_type == "tool":
        name = node.name.rsplit(".tool.", 1)[-1]
        attributes.update(
            {
                "openinference.span.kind": TOOL,
                "tool.name": name,
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "input.value": str(node.meta.get("arguments", "")),
                "gen_ai.tool.call.id": str(node.meta.get("call_id", "")),
            }
        )
    else:
        attributes["openinference.span.kind"] = CHAIN
    return attributes


def _role_of_parent(parent: Any, arg: str) -> str | None:
    """The chat role a parent of an LLM call played in its prompt (None: not a message)."""
    if parent.kind == "parameter":
        return "system" if arg in ("system_message", "system") else None
    if arg.startswith("prompt["):
        meta = parent.meta
        if meta.get("role"):
            return str(meta["role"])
        kind = parent.name.rsplit(".", 1)[-1]
        if kind == "tool_results":
            return "tool"
        if meta.get("source") in ("user", None) or kind in ("message",) and meta.get("source") == "user":
            return "user"
        return "assistant"
    return None


def _span_id(trace_id: str, node_id: str) -> str:
    return hashlib.sha256(f"{trace_id}/{node_id}".encode()).hexdigest()[:16]


def _raw_span(
    trace_id: str,
    span_id: str,
    parent_id: str,
    name: str,
    start: int,
    end: int,
    attributes: dict[str, Any],
    status: dict[str, Any] | None = None,
    links: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(max(end, start)),
        "attributes": _raw_attributes(attributes),
        "status": status or {"code": 1},
    }
    if parent_id:
        span["parentSpanId"] = parent_id
    if links:
        span["links"] = links
    return span


def _otlp_span(span: Span) -> dict[str, Any]:
    status = {"code": span.status, **({"message": span.status_message} if span.status_message else {})}
    raw = _raw_span(
        span.trace_id, span.span_id, span.parent_id, span.name, span.start, span.end, span.attributes, status
    )
    if span.events:
        raw["events"] = [
            {"name": name, "timeUnixNano": str(span.start), "attributes": _raw_attributes(data)}
            for name, data in span.events
        ]
    return raw


def _raw_attributes(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _raw_value(value)} for key, value in attributes.items() if value is not None]


def _raw_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_raw_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _raw_attributes(value)}}
    return {"stringValue": str(value)}


def _document(spans: list[dict[str, Any]], service_name: str, scope: str) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _raw_attributes({"service.name": service_name})},
                "scopeSpans": [{"scope": {"name": scope}, "spans": spans}],
            }
        ]
    }
