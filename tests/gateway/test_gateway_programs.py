"""Programs in a subprocess, any language: a Node.js script using the `openai` npm package, and a Python script.

They get the gateway's URL in OPENAI_BASE_URL (one per run) and a dummy key; the example on stdin or argv,
the output on stdout. The Node.js package is installed by scripts/setup (npm ci in tests/gateway/node).
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from gateway_helpers import UPSTREAM_KEY, data_parents, one_step, system_of

from opto_core import GatewayTarget
from opto_core.engine.executors import error_kind
from opto_core.gateway.target import ProgramFailed

NODE_DIR = Path(__file__).parent / "node"
NODE_DRAFT = "You write a short first draft about the topic you are given."
NODE_SUMMARY = "You summarize a draft in one sentence."


def node_program() -> list[str]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (scripts/setup needs node and npm for this test)")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.skip("the openai npm package is not installed: run scripts/setup (npm ci in tests/gateway/node)")
    return ["node", str(NODE_DIR / "pipeline.mjs")]


def scripted(body: dict) -> str:
    system = system_of(body)
    if "first draft" in system or "very short" in system:
        length = "brief" if "very short" in system else "lengthy"
        return f"A {length} draft about {body['messages'][-1]['content'].removeprefix('Topic: ')}."
    return "In one sentence: " + body["messages"][-1]["content"].split("\n", 1)[1]


def test_node_program_is_optimized_through_the_gateway(upstream):
    command = node_program()
    upstream.script(scripted)
    upstream.repeat_last = True
    trainset = ["owls", "rivers"]
    with GatewayTarget(
        command=command,
        upstream=upstream.base_url,
        api_key=UPSTREAM_KEY,
        discover_with=trainset,
        settings=["temperature"],
    ) as target:
        values = {p.name: p.value for p in target.parameters()}
        # temperature: the draft agent sends 0.7, the summary agent sends none (API default 1.0)
        assert values == {
            "agent_1.system": NODE_DRAFT,
            "agent_2.system": NODE_SUMMARY,
            "agent_1.temperature": 0.7,
            "agent_2.temperature": 1.0,
            "agent_2.user_1": "Summarize this draft:\n{agent_1_answer}",
        }  # composed of the draft
        output, graph = target.run("owls")
        assert output == "In one sentence: A lengthy draft about owls."
        calls = [n for n in graph.nodes if n.op_type == "llm_call"]
        assert len(calls) == 2 and calls[1].meta["settings"] == {"temperature": 1.0}
        composed = [graph[p] for p in data_parents(graph, calls[1].id) if graph[p].kind == "op"]
        assert composed and calls[0].id in [graph[p].edges[0].id for p in data_parents(graph, composed[0].id)]
        assert upstream.requests[-1]["stream"] is True  # the second call streams, through the gateway

        result = one_step(
            target,
            trainset,
            lambda ex, out: (1.0, "ok") if "brief" in out else (0.0, "too long"),
            {"agent_1.system": "You write a very short first draft."},
        )
        assert result.best_values["agent_1.system"] == "You write a very short first draft."
        upstream.requests.clear()
        assert target.run("moss")[0] == "In one sentence: A brief draft about moss."
        assert system_of(upstream.requests[0]) == "You write a very short first draft."
        assert {h["authorization"] for h in upstream.headers} == {f"Bearer {UPSTREAM_KEY}"}


PY_PROGRAM = textwrap.dedent('''
    import sys
    import openai

    question = sys.argv[1]
    client = openai.OpenAI(max_retries=0)
    answer = client.chat.completions.create(model="m", messages=[
        {"role": "system", "content": "Answer in French."}, {"role": "user", "content": question}])
    if question == "crash":
        raise SystemExit("the program gave up")
    print(answer.choices[0].message.content)
''')


@pytest.fixture
def py_program(tmp_path):
    path = tmp_path / "ask.py"
    path.write_text(PY_PROGRAM)
    return [sys.executable, str(path)]


def test_python_command_with_the_example_as_an_argument(upstream, py_program):
    upstream.script("Bonjour", "Oui")
    with GatewayTarget(
        command=py_program,
        example_via="argv",
        upstream=upstream.base_url,
        prompts={"french.system": "Answer in French."},
    ) as target:
        output, graph = target.run("Hello?")
        assert output == "Bonjour"
        assert "param:french.system" in data_parents(graph, [n for n in graph.nodes if n.op_type == "llm_call"][0].id)
        # without a key the gateway passes the program's own on
        assert upstream.headers[0]["authorization"] == "Bearer program-dummy-key"
        output, graph = target.run("crash")
    assert isinstance(output, ProgramFailed) and "the program gave up" in str(output)
    assert error_kind(output) == "workflow"
    assert graph.outputs and graph[graph.outputs[-1].edges[0].id].kind == "exception"


def test_a_program_that_fails_after_the_upstream_failed_is_an_infrastructure_failure(upstream, py_program):
    upstream.fail_with = (503, "overloaded")
    with GatewayTarget(command=py_program, example_via="argv", upstream=upstream.base_url) as target:
        output, graph = target.run("Hello?")
    assert error_kind(output) == "infrastructure" and "overloaded" in str(output)
    assert graph.meta["upstream_failures"][0]["status"] == 503


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="exactly one"):
        GatewayTarget(upstream="http://127.0.0.1:9/v1")
    with pytest.raises(TypeError, match="list of strings"):
        GatewayTarget(command="node agent.js", upstream="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="upstream"):
        GatewayTarget(command=["node", "agent.js"])
