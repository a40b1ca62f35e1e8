"""A plain `openai` program (draft -> summarize) optimized through the gateway with no change to its code."""

from __future__ import annotations

import json

import openai
import pytest
from gateway_helpers import UPSTREAM_KEY, data_parents, one_step, reaches, suggest, system_of

from opto_core import GatewayTarget, OptoPrime, optimize, write_report
from opto_core.engine.rundir import RunDir
from opto_core.gateway.graphs import graph_of_run
from opto_core.kernel.parameters import InvalidValue
from opto_core.testing import ScriptedLLM

DRAFT_SYSTEM = "You write a first draft about the topic."
SUMMARY_SYSTEM = "You summarize a draft in one sentence."


def draft_and_summarize(example: dict, *, stream: bool = False, api: str = "chat") -> str:
    """The user's program: two calls, the first answer feeds the second. It reads OPENAI_BASE_URL itself."""
    client = openai.OpenAI()
    if api == "responses":
        draft = client.responses.create(
            model="gpt-4o-mini", instructions=DRAFT_SYSTEM, input=f"Topic: {example['topic']}"
        ).output_text
        if stream:
            text = ""
            for event in client.responses.create(
                model="gpt-4o-mini", instructions=SUMMARY_SYSTEM, input=f"Summarize this draft:\n{draft}", stream=True
            ):
                if event.type == "response.output_text.delta":
                    text += event.delta
            return text
        return client.responses.create(
            model="gpt-4o-mini", instructions=SUMMARY_SYSTEM, input=f"Summarize this draft:\n{draft}"
        ).output_text
    messages = [{"role": "system", "content": DRAFT_SYSTEM}, {"role": "user", "content": f"Topic: {example['topic']}"}]
    if stream:
        draft = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
            )
            if chunk.choices
        )
    else:
        draft = (
            client.chat.completions.create(model="gpt-4o-mini", messages=messages, temperature=0.7)
            .choices[0]
            .message.content
        )
    summary = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": SUMMARY_SYSTEM},
            {"role": "user", "content": f"Summarize this draft:\n{draft}"},
        ],
    )
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


@pytest.mark.parametrize(
    "stream,api",
    [(False, "chat"), (True, "chat"), (False, "responses"), (True, "responses")],
    ids=["chat", "chat-streamed", "responses", "responses-streamed"],
)
def test_two_call_pipeline_is_optimized_through_the_gateway(upstream, stream, api):
    upstream.script(scripted_model)
    upstream.repeat_last = True
    trainset = [{"topic": "cats"}, {"topic": "tides"}]
    with GatewayTarget(
        run=lambda ex: draft_and_summarize(ex, stream=stream, api=api),
        upstream=upstream.base_url,
        api_key=UPSTREAM_KEY,
        discover_with=trainset,
    ) as target:
        # the system prompts found in the traffic are the parameters (both appear in both runs)
        names = {p.name: p.value for p in target.parameters()}
        assert names == {
            "agent_1.system": DRAFT_SYSTEM,
            "agent_2.system": SUMMARY_SYSTEM,
            "agent_2.user_1": "Summarize this draft:\n{agent_1_answer}",
        }  # composed of the draft

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


def test_an_async_program_is_run_to_its_end(upstream):
    upstream.script("Bonjour")

    async def greet(example: dict) -> str:
        client = openai.AsyncOpenAI()
        answer = await client.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": example["text"]}],
        )
        return answer.choices[0].message.content

    with GatewayTarget(run=greet, upstream=upstream.base_url, prompts={"french.system": "Answer in French."}) as target:
        output, graph = target.run({"text": "Hello"})
    assert output == "Bonjour"
    assert [n.name for n in graph.nodes if n.op_type == "llm_call"] == ["french.llm"]


def test_the_run_directory_and_the_report_work_as_for_every_target(upstream, tmp_path):
    upstream.script(scripted_model)
    upstream.repeat_last = True
    trainset = [{"topic": "cats"}, {"topic": "tides"}]
    with GatewayTarget(run=draft_and_summarize, upstream=upstream.base_url, discover_with=trainset) as target:
        llm_values = {"agent_1.system": "You write a short draft about the topic."}
        result = optimize(
            target,
            trainset,
            feedback,
            OptoPrime(target.parameters(), ScriptedLLM([suggest(llm_values)])),
            max_steps=1,
            batch_size=2,
            run_dir=str(tmp_path / "run"),
        )
        target.save_values(str(tmp_path / "best.json"))
    assert result.best_values["agent_1.system"] == llm_values["agent_1.system"]
    assert RunDir.is_run(str(tmp_path / "run"))
    report = write_report(str(tmp_path / "run")).read_text()
    assert "agent_1.system" in report and "agent_1.llm" in report
    saved = json.loads((tmp_path / "best.json").read_text())
    assert saved["meta"]["framework"] == "gateway" and saved["values"]["agent_1.system"] == llm_values["agent_1.system"]


SUPPORT_SYSTEM = "You are the support agent of {company}. Answer in full paragraphs."
ESCALATE_USER = "Write a ticket for the team from this answer:\n{answer}"


def support_pipeline(example: dict) -> str:
    """A program that fills in its prompts (``str.format``) before sending them: templates, not texts."""
    client = openai.OpenAI()
    answer = (
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": SUPPORT_SYSTEM.format(company=example["company"])},
                {"role": "user", "content": example["question"]},
            ],
        )
        .choices[0]
        .message.content
    )
    return (
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": ESCALATE_USER.format(answer=answer)}]
        )
        .choices[0]
        .message.content
    )


def support_model(body: dict) -> str:
    first = body["messages"][0]["content"]
    if first.startswith("You are the support agent of"):
        company = first.removeprefix("You are the support agent of ").split(".")[0]
        length = "one-line" if "one line" in first else "multi-paragraph"
        return f"A {length} answer from {company} support about the refund."
    return "TICKET: " + first.split("\n", 1)[1]


def test_declared_templates_are_matched_credited_and_deployed_with_the_programs_values(upstream):
    upstream.script(support_model)
    upstream.repeat_last = True
    trainset = [{"company": "Acme", "question": "Where is my refund?"}]
    with GatewayTarget(
        run=support_pipeline,
        upstream=upstream.base_url,
        templates={"support.system": SUPPORT_SYSTEM, "ticket.user": ESCALATE_USER},
    ) as target:
        assert [p.template_model is not None for p in target.parameters()] == [True, True]
        output, graph = target.run(trainset[0])
        assert output == "TICKET: A multi-paragraph answer from Acme support about the refund."
        first, second = [n for n in graph.nodes if n.op_type == "llm_call"]
        # the filled-in system message is an output of the template parameter (the builder's template match)
        (system_edge,) = [e for e in first.edges if e.id == "param:support.system"]
        assert system_edge.arg == "system_message" and system_edge.match == "template"
        # the ticket message: the template's placeholder bound the first answer, so the answer feeds the second call
        composed = next(graph[e.id] for e in second.edges if graph[e.id].name == "user.message")
        assert composed.value.startswith("Write a ticket") and reaches(graph, first.id, second.id)
        assert "param:ticket.user" in data_parents(graph, second.id)
        # a new value must keep the placeholders the program fills
        with pytest.raises(InvalidValue, match="company"):
            target.bound.apply({"support.system": "You are a support agent. Answer in one line."})

        result = one_step(
            target,
            trainset,
            lambda ex, out: (0.0, "answers must be one line"),
            {"support.system": "You are the support agent of {company}. Answer in one line."},
        )
        assert result.best_values["support.system"] == "You are the support agent of {company}. Answer in one line."
        upstream.requests.clear()
        output, _ = target.run({"company": "Globex", "question": "Where is my parcel?"})
    # the unchanged program's next request: the new template, filled with what the program put into the old one
    assert upstream.requests[0]["messages"][0]["content"] == "You are the support agent of Globex. Answer in one line."
    assert output == "TICKET: A one-line answer from Globex support about the refund."
