"""OpenTelemetry in and out: spans from OpenInference's openai instrumentation (and GenAI-convention spans)
import into the same graph shape as the gateway records; graphs export as valid OTLP JSON; offline optimization."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import openai
import pytest
from gateway_helpers import suggest

from opto_core import OptoPrime
from opto_core.gateway.otel import Span
from opto_core.gateway.parameters import TrafficParameters
from opto_core.otel import load_spans, optimize_offline, spans_to_otlp, to_spans
from opto_core.testing import ScriptedLLM, tool_call

WEATHER_SYSTEM = "You answer weather questions with the lookup tool."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def weather_program(client: openai.OpenAI, city: str) -> str:
    """A plain openai tool loop, then a second call that rewrites the first one's answer."""
    messages = [{"role": "system", "content": WEATHER_SYSTEM}, {"role": "user", "content": f"Weather in {city}?"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS, temperature=0.2)
    call = first.choices[0].message.tool_calls[0]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": f"Sunny, 21C in {city}"},
    ]
    answer = (
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS).choices[0].message.content
    )
    return (
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "You turn answers into a haiku."},
                {"role": "user", "content": f"Make a haiku of: {answer}"},
            ],
        )
        .choices[0]
        .message.content
    )


def script(upstream, city: str) -> None:
    upstream.script(
        tool_call("lookup", call_id=f"call_{city}", city=city), f"It is sunny in {city}.", f"Sun over {city}"
    )


def shape(graph) -> list[tuple]:
    """What two graphs of the same program must share: nodes by name and kind, edges by parent name, arg, via."""
    return sorted(
        (node.name, node.kind, node.op_type, tuple(sorted((graph[e.id].name, e.arg, e.via) for e in node.edges)))
        for node in graph.nodes
    )


@pytest.fixture
def instrumented():
    """OpenInference's openai instrumentation, exporting to memory (no collector)."""
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield provider, exporter
    instrumentor.uninstrument()


def test_openinference_spans_import_into_the_gateways_graph_shape(upstream, gateway, instrumented):
    provider, exporter = instrumented
    tracer = provider.get_tracer("test")
    for city in ("Oslo", "Lima"):
        script(upstream, city)
        with tracer.start_as_current_span("weather-haiku"):
            weather_program(openai.OpenAI(base_url=upstream.base_url, api_key="k"), city)
    traces = load_spans(exporter.get_finished_spans(), min_runs=2, settings=["temperature"])
    assert len(traces) == 2 and not traces.skipped and traces.ignored == 2  # the two plain root spans
    found = {p.name: p.value for p in traces.parameters.parameters()}
    assert found["agent_1.system"] == WEATHER_SYSTEM and found["agent_2.system"] == "You turn answers into a haiku."

    # the same program through the gateway, built with the same parameters
    gateway.parameters = traces.parameters
    script(upstream, "Oslo")
    with gateway.open_run("live"):
        weather_program(openai.OpenAI(base_url=gateway.base_url), "Oslo")
    live = gateway.graph("live")
    assert shape(traces[0]) == shape(live)
    calls = [n for n in live.nodes if n.op_type == "llm_call"]
    assert len(calls) == 3 and [n.name for n in live.nodes if n.op_type == "tool"] == ["agent_1.tool.lookup"]
    assert traces[0].meta["usage"]["prompt_tokens"] > 0


def test_an_exported_graph_is_valid_otlp_json_and_imports_back(upstream, gateway):
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    gateway.parameters.prompt("weather.system", WEATHER_SYSTEM)
    script(upstream, "Oslo")
    with gateway.open_run("export"):
        weather_program(openai.OpenAI(base_url=gateway.base_url), "Oslo")
    graph = gateway.graph("export")
    document = to_spans(graph)
    text = json.dumps(document)
    # OTLP JSON is protobuf's JSON mapping, except that trace and span ids are hex (not base64)
    spans = [span for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
    for span in spans:
        assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
        int(span["traceId"], 16), int(span["spanId"], 16)
    as_proto = json.loads(text, object_hook=_ids_to_base64)
    message = json_format.ParseDict(as_proto, ExportTraceServiceRequest())  # unknown fields or bad types raise
    parsed = message.resource_spans[0].scope_spans[0].spans
    assert len(parsed) == 1 + len([n for n in graph.nodes if n.kind in ("op", "exception")])
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in parsed)
    assert sum(len(s.links) for s in parsed) > 0  # the data-flow edges between ops
    kinds = {a.value.string_value for s in parsed for a in s.attributes if a.key == "openinference.span.kind"}
    assert kinds == {"CHAIN", "LLM", "TOOL"}

    back = load_spans(document, parameters=_fresh(gateway.parameters), propose=False)
    assert shape(back[0]) == shape(graph)


def _ids_to_base64(obj: dict) -> dict:
    for key in ("traceId", "spanId", "parentSpanId"):
        if isinstance(obj.get(key), str) and obj[key]:
            obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode()
    return obj


def _fresh(parameters: TrafficParameters) -> TrafficParameters:
    copy = TrafficParameters()
    for name, spec in parameters.specs().items():
        copy.add_spec(name, spec)
    return copy


def otlp(*spans: dict) -> dict:
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "x"}, "spans": list(spans)}]}]}


def span(
    span_id: str, name: str, attributes: dict, parent: str = "", events: list | None = None, status: int = 1
) -> dict:
    raw = {
        "traceId": "ab" * 16,
        "spanId": span_id * 8,
        "name": name,
        "startTimeUnixNano": str(int(span_id, 16) * 1000),
        "endTimeUnixNano": str(int(span_id, 16) * 1000 + 500),
        "status": {"code": status},
        "attributes": [
            {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}}
            for k, v in attributes.items()
        ],
    }
    if parent:
        raw["parentSpanId"] = parent * 8
    if events:
        raw["events"] = [
            {"name": n, "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in a.items()]}
            for n, a in events
        ]
    return raw


GENAI_CASES = {
    "json messages": {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be terse."}]),
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi there"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Hello."}]}]),
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 2,
    },
    "flattened": {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Be terse.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Hi there",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Hello.",
    },
}


@pytest.mark.parametrize("case", list(GENAI_CASES))
def test_genai_convention_spans_import(case):
    document = otlp(
        span("1", "agent", {"gen_ai.operation.name": "invoke_agent", "output.value": "Hello."}),
        span("2", "chat gpt-4o-mini", GENAI_CASES[case], parent="1"),
    )
    traces = load_spans(document, min_runs=1, feedback_attribute="eval.score")
    (graph,) = traces
    (call,) = [n for n in graph.nodes if n.op_type == "llm_call"]
    assert call.value == "Hello." and call.meta["model"] == "gpt-4o-mini"
    assert "param:agent_1.system" in [e.id for e in call.edges] and graph["param:agent_1.system"].value == "Be terse."
    assert traces.feedback == [None]


def test_genai_event_spans_and_feedback_from_an_attribute():
    events = [
        ("gen_ai.system.message", {"content": "Be terse."}),
        ("gen_ai.user.message", {"content": "Hi there"}),
        ("gen_ai.choice", {"message": json.dumps({"content": "Hello."})}),
    ]
    document = otlp(
        span("1", "root", {"openinference.span.kind": "CHAIN", "eval.score": "0.25", "eval.comment": "too curt"}),
        span("2", "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, "1", events),
    )
    traces = load_spans(document, min_runs=1, feedback_attribute="eval.score", feedback_text_attribute="eval.comment")
    assert [n.value for n in traces[0].nodes if n.op_type == "llm_call"] == ["Hello."]
    assert traces.feedback[0].score == 0.25 and traces.feedback[0].text == "too curt"
    assert traces[0].meta["feedback"] == {"score": 0.25, "text": "too curt"}


def test_spans_missing_attributes_are_skipped_and_counted_never_a_crash(caplog):
    document = otlp(
        span("1", "llm without messages", {"openinference.span.kind": "LLM", "llm.model_name": "m"}),
        span("2", "tool without result", {"openinference.span.kind": "TOOL", "tool.name": "t"}),
        span("3", "embedding", {"openinference.span.kind": "EMBEDDING"}),
        span("4", "retriever", {"openinference.span.kind": "RETRIEVER"}),
    )
    traces = load_spans(document)
    assert list(traces) == [] and traces.ignored == 1
    assert traces.skipped == {
        "LLM span without input messages": 1,
        "tool span without a result": 1,
        "retriever span without documents": 1,
        "trace without a readable LLM span": 1,
    }
    assert "skipped 4 spans" in caplog.text
    with pytest.raises(ValueError, match="resourceSpans"):
        load_spans({"spans": []})


def test_retrieved_documents_feed_the_call_that_quotes_them():
    document = otlp(
        span(
            "1",
            "retrieve",
            {
                "openinference.span.kind": "RETRIEVER",
                "input.value": "tides",
                "retrieval.documents.0.document.content": "Tides follow the moon.",
            },
        ),
        span(
            "2",
            "answer",
            {
                "openinference.span.kind": "LLM",
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "Answer from the context.",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": "Context: Tides follow the moon.\nWhy tides?",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "The moon.",
            },
        ),
    )
    (graph,) = load_spans(document, min_runs=1)
    (documents,) = [n for n in graph.nodes if n.name == "retriever.retrieve.message"]
    composed = [n for n in graph.nodes if documents.id in [e.id for e in n.edges]]
    call = [n for n in graph.nodes if n.op_type == "llm_call"][0]
    assert composed and composed[0].id in [e.id for e in call.edges if e.via == "data"]


def test_optimize_offline_writes_values_and_a_diff_that_a_gateway_serves(tmp_path, upstream):
    document = otlp(
        span("1", "root", {"openinference.span.kind": "CHAIN", "eval.score": 0}),
        span("2", "chat", GENAI_CASES["flattened"], "1"),
    )
    traces = load_spans(document, min_runs=1, feedback_attribute="eval.score")
    llm = ScriptedLLM([suggest({"agent_1.system": "Be terse, and greet back warmly."})])
    optimizer = OptoPrime(traces.parameters.parameters(), llm)
    result = optimize_offline(traces, None, optimizer, values_path=tmp_path / "offline.json")
    assert result.changed == {"agent_1.system": "Be terse, and greet back warmly."} and result.used == 1
    assert "-Be terse." in result.diff and "+Be terse, and greet back warmly." in result.diff
    assert result.diff_path.read_text() == result.diff
    assert traces.parameters.parameters()[0].value == "Be terse."  # nothing applied anywhere
    # the values file carries the rules: a gateway with nothing declared serves it
    from opto_core.gateway.proxy import Gateway

    upstream.script("ok")
    proxy = Gateway(upstream.base_url, values=str(result.values_path)).start()
    try:
        openai.OpenAI(base_url=proxy.base_url, api_key="k").chat.completions.create(
            model="m", messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
        )
    finally:
        proxy.stop()
    assert upstream.requests[0]["messages"][0]["content"] == "Be terse, and greet back warmly."
    with pytest.raises(ValueError, match="feedback"):
        optimize_offline(load_spans(document, min_runs=1), None, optimizer, values_path=None)


def test_opto_import_writes_graphs(tmp_path, instrumented, upstream):
    provider, exporter = instrumented
    script(upstream, "Rome")
    with provider.get_tracer("test").start_as_current_span("weather-haiku"):  # one trace for the three calls
        weather_program(openai.OpenAI(base_url=upstream.base_url, api_key="k"), "Rome")
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(spans_to_otlp(exporter.get_finished_spans())))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from opto_core.app.cli import main; main()",
            "import",
            str(path),
            "--out",
            str(tmp_path / "graphs"),
            "--min-runs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 traces, 3 LLM calls" in done.stdout and "agent_1.system" in done.stdout
    graph = json.loads((tmp_path / "graphs" / "trace_0000.json").read_text())
    assert graph["format"] == "opto-graph/1" and graph["meta"]["source"] == "opentelemetry"


def test_sdk_spans_and_span_records_read_alike(instrumented, upstream):
    provider, exporter = instrumented
    script(upstream, "Bern")
    weather_program(openai.OpenAI(base_url=upstream.base_url, api_key="k"), "Bern")
    from opto_core.otel import read_spans

    direct = read_spans(exporter.get_finished_spans())
    via_json = read_spans(json.loads(json.dumps(spans_to_otlp(exporter.get_finished_spans()))))
    assert direct == via_json and all(isinstance(s, Span) for s in direct)


def test_opto_import_optimize_writes_a_values_file_and_a_diff(tmp_path, upstream):
    """`opto import --optimize`: one OptoPrime step over recorded traces (the optimizer's model is scripted)."""
    document = otlp(
        span("1", "root", {"openinference.span.kind": "CHAIN", "eval.score": 0.2, "output.value": "Hello."}),
        span("2", "chat", GENAI_CASES["flattened"], "1"),
    )
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(document))
    upstream.script(suggest({"agent_1.system": "Be terse but friendly."}))
    upstream.repeat_last = True
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from opto_core.app.cli import main; main()",
            "import",
            str(path),
            "--feedback-attribute",
            "eval.score",
            "--min-runs",
            "1",
            "--optimize",
            "--values-out",
            str(tmp_path / "proposed.json"),
            "--base-url",
            upstream.base_url,
            "--model",
            "scripted",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPENAI_API_KEY": "k"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    values = json.loads((tmp_path / "proposed.json").read_text())
    assert values["values"] == {"agent_1.system": "Be terse but friendly."}
    assert values["meta"]["gateway"]["agent_1.system"]["original"] == "Be terse."
    assert "+Be terse but friendly." in (tmp_path / "proposed.diff").read_text()
    assert "proposed.json" in done.stdout and upstream.requests  # the optimizer's model was asked


def test_traffic_recorded_by_the_gateway_is_optimized_offline(upstream, tmp_path):
    """`opto gateway --record DIR`, then: load the runs, find the prompts, judge the graphs, propose."""
    from opto_core import TrafficParameters
    from opto_core.gateway.graphs import graph_of_run
    from opto_core.gateway.proxy import Gateway
    from opto_core.gateway.recording import load_runs

    upstream.script("A very long answer about tides and moons.", "A very long answer about owls.")
    proxy = Gateway(upstream.base_url, record_dir=str(tmp_path / "runs")).start()
    try:
        for question in ("Tides?", "Owls?"):
            with proxy.open_run():
                openai.OpenAI(base_url=proxy.base_url, api_key="k").chat.completions.create(
                    model="m",
                    messages=[{"role": "system", "content": "Be helpful."}, {"role": "user", "content": question}],
                )
    finally:
        proxy.stop()
    runs = load_runs(tmp_path / "runs")
    rules = TrafficParameters()
    assert [p.name for p in rules.propose(runs, min_runs=2)] == ["agent_1.system"]
    graphs = [graph_of_run(run, rules) for run in runs]
    llm = ScriptedLLM([suggest({"agent_1.system": "Be helpful and brief."})])
    result = optimize_offline(
        graphs,
        lambda graph: (0.0, "too long"),
        OptoPrime(rules.parameters(), llm),
        parameters=rules,
        values_path=tmp_path / "v.json",
    )
    assert result.used == 2 and result.changed == {"agent_1.system": "Be helpful and brief."}
    assert "Tides?" in llm.requests[0]["messages"][-1]["content"]  # the recorded graphs were the problem
