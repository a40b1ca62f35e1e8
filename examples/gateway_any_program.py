"""Optimize programs opto has no adapter for, through the recording gateway (docs/gateway.md).

    python examples/gateway_any_program.py python         # a plain `openai` program (examples/gateway/draft_summarize.py)
    python examples/gateway_any_program.py agents         # an OpenAI Agents SDK program (examples/gateway/weather_poem.py)
    python examples/gateway_any_program.py node           # a Node.js program with the `openai` npm package
    python examples/gateway_any_program.py stand-in --port 8765     # serve the stand-in model (for `opto gateway`)
    python examples/gateway_any_program.py traces traces.json       # OpenInference spans of the python program

Each optimizing command: discovers the prompts in the program's traffic, prints the graph of one run
(calls and data-flow edges), takes one OptoPrime step, shows that the unchanged program's next request
carries the new prompt, and saves the values (``--values-out``, default ``best.json``) for
``opto gateway --values``. Nothing in the programs refers to opto.

Offline by default: the "real endpoint" is a stand-in model on 127.0.0.1 (rule-based: it writes long
drafts and poems unless its system prompt says "very short"), and the optimizer's answer is scripted
(the stand-in answers OptoPrime's request too, with a fixed suggestion). These runs show the plumbing,
not optimization quality. With ``--upstream URL --model NAME`` (key: OPTO_UPSTREAM_API_KEY, else
OPENAI_API_KEY) the program talks to a real endpoint through the gateway and that model is also the optimizer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gateway"))  # the user's programs

NODE_PROGRAM = HERE.parent / "tests" / "gateway" / "node" / "pipeline.mjs"  # its openai package: scripts/setup


# ----- the stand-in model ------------------------------------------------------------------------------------
def system_of(body: dict) -> str:
    """The system prompt of a request, chat completions or Responses."""
    if "instructions" in body:
        return body.get("instructions") or ""
    first = body["messages"][0]
    return first["content"] if first["role"] in ("system", "developer") else ""


def stand_in(body: dict) -> object:
    """A rule-based stand-in for a hosted model: answers the draft/summary, triage/poet and optimizer calls."""
    from opto_core.testing import tool_call

    system = system_of(body)
    items = body.get("input") if "instructions" in body else body["messages"]
    said = json.dumps(items)
    if "#Variables" in said:  # an OptoPrime request: suggest "very short" for the prompt that makes long texts
        found = re.findall(r"\(text\) (agent_\d+\.system)=([^\n\\]*)", said)
        suggestion = {
            name: re.sub(r"\ba (short )?(first draft|two-line poem)", r"a very short \2", value)
            for name, value in found
            if re.search(r"first draft|two-line poem", value)
        }
        return json.dumps(
            {"reasoning": "The output is long because the prompt asks for long texts.", "suggestion": suggestion}
        )
    concise = "very short" in system
    if "hand off" in system:  # the triage agent: look the weather up, then hand off
        if "get_weather" not in said or "call_weather" not in said:
            city = said.split("poem for ")[1].split('"')[0].split("\\")[0]
            return tool_call("get_weather", call_id="call_weather", city=city)
        return tool_call("transfer_to_poet", call_id="call_handoff")
    if "poem" in system:
        report = re.search(r"Sunny[^\"\\]*", said)
        weather = report.group(0) if report else "weather unknown"
        return (
            f"{weather}: bright."
            if concise
            else f"{weather}: the sky is wide and bright above the harbour, the day is long and light on every street."
        )
    if "draft" in system and "summarize" not in system.lower():
        topic = said.split("Topic: ")[-1].split('"')[0].split("\\")[0]
        return (
            f"{topic}: a brief note."
            if concise
            else f"{topic}: a long draft that wanders through history, habits, myths and a dozen loosely related facts."
        )
    draft = said.split("Summarize this draft:")[-1].split('"')[0].replace("\\n", " ").strip()
    return f"In short: {draft}"


def start_stand_in(port: int = 0):
    from opto_core.testing import ScriptedServer

    return ScriptedServer([stand_in], repeat_last=True).start(port)


# ----- optimizing one program ----------------------------------------------------------------------------------
def short_enough(example, output) -> tuple[float, str]:
    words = len(str(output).split())
    return (1.0, "good: short") if words <= 12 else (0.0, f"too long ({words} words): the output must be very short")


PROGRAMS = {
    "python": dict(trainset=[{"topic": "owls"}, {"topic": "tides"}], next={"topic": "moss"}),
    "agents": dict(trainset=[{"city": "Oslo"}, {"city": "Lima"}], next={"city": "Rome"}, tools=["get_weather"]),
    "node": dict(trainset=["owls", "tides"], next="moss", settings=["temperature"]),
}


def target_of(which: str, upstream: str, key: str | None):
    from opto_core import GatewayTarget

    spec = PROGRAMS[which]
    common = dict(
        upstream=upstream,
        api_key=key,
        discover_with=spec["trainset"],
        tools=spec.get("tools", ()),
        settings=spec.get("settings", ()),
    )
    if which == "python":
        from draft_summarize import draft_and_summarize

        return GatewayTarget(run=draft_and_summarize, **common)
    if which == "agents":
        os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # the SDK would export its traces to OpenAI
        from agents import set_tracing_disabled
        from weather_poem import weather_poem

        set_tracing_disabled(True)
        return GatewayTarget(run=weather_poem, **common)
    if not (NODE_PROGRAM.parent / "node_modules" / "openai").is_dir():
        sys.exit(f"install the openai npm package first: (cd {NODE_PROGRAM.parent} && npm ci)")
    return GatewayTarget(command=["node", str(NODE_PROGRAM)], **common)


def optimize_program(which: str, args: argparse.Namespace) -> None:
    from opto_core import OpenAIChat, OptoPrime, optimize

    server = None
    if args.upstream:
        # the gateway holds the key (programs get a dummy); an endpoint that wants none gets "no-key"
        upstream = args.upstream
        key = os.environ.get("OPTO_UPSTREAM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "no-key"
    else:
        server = start_stand_in()
        upstream, key = server.base_url, "stand-in-key"
    try:
        with target_of(which, upstream, key) as target:
            if not target.parameters():
                sys.exit("no prompt was found in the program's traffic (see the warnings above)")
            print("parameters found in the traffic:")
            for parameter in target.parameters():
                print(f"  {parameter.name} = {parameter.value!r}")
            spec = PROGRAMS[which]
            output, graph = target.run(spec["trainset"][0])
            print(f"one run: {output!r}")
            print("its graph (op <- data parents):")
            for node in graph.nodes:
                if node.kind == "op":
                    parents = [graph[e.id].name for e in node.edges if e.via == "data"]
                    print(f"  {node.name:32} <- {', '.join(parents)}")
            before = {p.name: p.value for p in target.parameters()}
            llm = (
                OpenAIChat(base_url=upstream, api_key=key, model=args.model)
                if args.upstream
                else OpenAIChat(base_url=upstream, api_key=key, model="stand-in")
            )
            result = optimize(
                target,
                spec["trainset"],
                short_enough,
                OptoPrime(target.parameters(), llm),
                max_steps=1,
                batch_size=len(spec["trainset"]),
            )
            for name, value in result.best_values.items():
                if value != before.get(name):
                    print(f"changed: {name}: {before.get(name)!r} -> {value!r}")
            target.apply(result.best_values)
            output, graph = target.run(spec["next"])
            sent = [exchange.request for exchange in target.gateway.run(graph.meta["gateway_run"]).exchanges]
            print(f"next run (program unchanged): {output!r}")
            print("  the system prompts its requests carried upstream:", [system_of(body) for body in sent])
            target.save_values(args.values_out)
            print(f"values: {args.values_out}  (serve them: opto gateway --upstream URL --values {args.values_out})")
    finally:
        if server is not None:
            server.stop()


# ----- spans -------------------------------------------------------------------------------------------------
def record_traces(path: str) -> None:
    """Run the python program twice under OpenInference's openai instrumentation (against the stand-in) and
    write the spans as OTLP JSON, each trace's root span carrying a score (``eval.score``)."""
    from draft_summarize import draft_and_summarize
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from opto_core.otel import spans_to_otlp

    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    server = start_stand_in()
    os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="stand-in-key")
    try:
        for topic in ("owls", "tides"):
            with provider.get_tracer("example").start_as_current_span("draft-and-summarize") as root:
                output = draft_and_summarize({"topic": topic})
                score, comment = short_enough(topic, output)
                root.set_attribute("output.value", output)
                root.set_attribute("eval.score", score)
                root.set_attribute("eval.comment", comment)
    finally:
        server.stop()
    Path(path).write_text(json.dumps(spans_to_otlp(exporter.get_finished_spans()), indent=1))
    print(f"{len(exporter.get_finished_spans())} spans written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["python", "agents", "node", "stand-in", "traces"])
    parser.add_argument("path", nargs="?", default="traces.json", help="traces: where to write the spans")
    parser.add_argument("--upstream", help="a real OpenAI-compatible endpoint (key: OPTO_UPSTREAM_API_KEY)")
    parser.add_argument("--model", default="gpt-4o-mini", help="the optimizer's model (with --upstream)")
    parser.add_argument("--values-out", default="best.json")
    parser.add_argument("--port", type=int, default=8765, help="stand-in: the port to serve on")
    args = parser.parse_args()
    if args.what == "stand-in":
        server = start_stand_in(args.port)
        print(f"stand-in model: {server.base_url} (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.stop()
    elif args.what == "traces":
        record_traces(args.path)
    else:
        optimize_program(args.what, args)


if __name__ == "__main__":
    main()
