"""A plain `openai` program (draft -> summarize) optimized through the gateway with no change to its code."""

from __future__ import annotations

import openai
import pytest
from gateway_helpers import UPSTREAM_KEY, data_parents, one_step, reaches, system_of

from opto_core import GatewayTarget
from opto_core.gateway.graphs import graph_of_run

DRAFT_SYSTEM = "You write a first draft about the topic."
SUMMARY_SYSTEM = "You summarize a draft in one sentence."


def draft_and_summarize(example: dict, *, stream: bool = False, api: str = "chat") -> str:
    """The user's program: two calls, the first answer feeds the second. It reads OPENAI_BASE_URL itself."""
    client = openai.OpenAI()
    if api == "responses":
        draft = client.responses.create(model="gpt-4o-mini", instructions=DRAFT_SYSTEM,
                                        input=f"Topic: {example['topic']}").output_text
        if stream:
            text = ""
            for event in client.responses.create(model="gpt-4o-mini", instructions=SUMMARY_SYSTEM,
                                                 input=f"Summarize this draft:\n{draft}", stream=True):
                if event.type == "response.output_text.delta":
                    text += event.delta
            return text
        return client.responses.create(model="gpt-4o-mini", instructions=SUMMARY_SYSTEM,
                                       input=f"Summarize this draft:\n{draft}").output_text
    messages = [{"role": "system", "content": DRAFT_SYSTEM}, {"role": "user", "content": f"Topic: {example['topic']}"}]
    if stream:
        draft = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True})
            if chunk.choices)
    else:
        draft = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                               temperature=0.7).choices[0].message.content
    summary = client.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": SUMMARY_SYSTEM}, {"role": "user", "content": f"Summarize this draft:\n{draft}"}])
    return summary.choices[0].message.content


def scripted_model(body: dict) -> str:
    """The fake model: a draft that names the topic, and a summary that says whether the draft was short."""
    system = system_of(body)
    if "draft" in system and "summarize" not in system.lower():
        last = body["messages"][-1]["content"] if "messages" in body else body["input"]
        size = "short" if "short" in system else "long"
        return f"A {size} draft on {last.removeprefix('Topic: ')}: it has many details worth keeping."
    return "Summary: " + ("short and clear." if "short draft" in str(body) else "long and rambling.")


def feedback(example: dict, output: str) -> tuple[float, str]:
    return (1.0, "good") if "short" in output else (0.0, "the summary is rambling: make the drafts short")


@pytest.mark.parametrize("stream,api", [(False, "chat"), (True, "chat"), (False, "responses"), (True, "responses")],
                         ids=["chat", "chat-streamed", "responses", "responses-streamed"])
def test_two_call_pipeline_is_optimized_through_the_gateway(upstream, stream, api):
    upstream.script(scripted_model)
    upstream.repeat_last = True
    trainset = [{"topic": "cats"}, {"topic": "tides"}]
    with GatewayTarget(run=lambda ex: draft_and_summarize(ex, stream=stream, api=api), upstream=upstream.base_url,
                       api_key=UPSTREAM_KEY, discover_with=trainset) as target:
        # the system prompts found in the traffic are the parameters (both appear in both runs)
        names = {p.name: p.value for p in target.parameters()}
        assert names == {"agent_1.system": DRAFT_SYSTEM, "agent_2.system": SUMMARY_SYSTEM,
                         "agent_2.user_1": "Summarize this draft:\n{agent_1_answer}"}  # composed of the draft

        output, graph = target.run(trainset[0])
        assert output == "Summary: long and rambling."
        calls = [n for n in graph.nodes if n.op_type == "llm_call"]
        assert [n.name for n in calls] == ["agent_1.llm", "agent_2.llm"]
        # the data flow: the draft's text is inside the second request, so the first call feeds the second
        draft_answer = next(n for n in graph.nodes if n.edges and n.edges[0].id == calls[0].id)
        composed = next(n for n in graph.nodes if draft_answer.id in data_parents(graph, n.id))
        assert composed.value.startswith("Summarize this draft:\n") and composed.id in data_parents(graph, calls[1].id)
        assert reaches(graph, "param:agent_1.system", graph.outputs[0].id)
        assert "param:agent_1.system" in data_parents(graph, calls[0].id)
        assert calls[0].meta["usage"]["prompt_tokens"] > 0 and graph.meta["usage"]["completion_tokens"] > 0
        if stream and api == "chat":
            assert calls[0].meta["usage"]  # assembled from the stream's usage chunk

        # one optimization step changes the draft prompt ...
        result = one_step(target, trainset, feedback, {"agent_1.system": "You write a short draft about the topic."})
        assert result.best_values["agent_1.system"] == "You write a short draft about the topic."

        # ... and the unchanged program's next request carries it
        upstream.requests.clear()
        assert target.run({"topic": "owls"})[0] == "Summary: short and clear."
        assert system_of(upstream.requests[0]) == "You write a short draft about the topic."
        assert system_of(upstream.requests[1]) == SUMMARY_SYSTEM
        # the upstream got the gateway's key, never the program's
        assert {h["authorization"] for h in upstream.headers} == {f"Bearer {UPSTREAM_KEY}"}


def test_the_output_the_program_prints_is_the_graphs_output(upstream, gateway):
    """A program that post-processes its last answer: the output node is composed from that answer."""
    upstream.script("Paris is the capital of France.")
    client = openai.OpenAI(base_url=gateway.base_url)
    with gateway.open_run("post") as run_id:
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Capital?"}])
    output = answer.choices[0].message.content.upper()
    graph = graph_of_run(gateway.run(run_id), gateway.parameters, output=output)
    (marked,) = graph.outputs
    source = graph[marked.edges[0].id]
    assert source.value == output and source.name == "program.message"
    assert [graph[p].value for p in data_parents(graph, source.id)] == ["Paris is the capital of France."]
