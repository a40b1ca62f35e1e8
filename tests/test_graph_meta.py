"""One graph vocabulary: a graph recorded by each adapter carries the same meta keys and marks its output.

Each graph comes from a real run of the framework's own objects: a plain-Python workflow
(`FunctionTarget`), a LangChain chain with LangChain's fake chat model, a DSPy program with DSPy's
``DummyLM``, an AutoGen AgentChat agent with AutoGen's replay client, and a classic AutoGen (AG2)
chat whose model is a scripted OpenAI-compatible server on 127.0.0.1. Only the models are fake.
"""

from __future__ import annotations

import platform
from typing import Any, Callable

import pytest

from opto_core.engine.target import FunctionTarget
from opto_core.kernel.graph import (
    META_ADAPTER,
    META_FRAMEWORK,
    META_FRAMEWORK_VERSION,
    META_RUN_ID,
    META_USAGE,
    Graph,
    run_meta,
)
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.trace import capture, op

SHARED_KEYS = {META_ADAPTER, META_FRAMEWORK, META_FRAMEWORK_VERSION, META_RUN_ID, META_USAGE}


# ----- one run per adapter ---------------------------------------------------------------------------
def python_graph() -> tuple[Graph, str]:
    style = Parameter("style", "text", "Answer briefly.")

    @op
    def answer(question: str, style: str) -> str:
        return f"{style} {question} -> 4"

    target = FunctionTarget(lambda question: answer(question, style), [style])
    output, graph = target.run({"question": "2+2?"})
    assert output == "Answer briefly. 2+2? -> 4"
    return graph, platform.python_version()


def langchain_graph() -> tuple[Graph, str]:
    langchain_core = pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from opto_adapters.langchain import OptoCallbackHandler

    chain = (
        ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
        | FakeListChatModel(responses=["4"])
        | StrOutputParser()
    )
    handler = OptoCallbackHandler()
    assert chain.invoke({"question": "2+2?"}, config={"callbacks": [handler]}) == "4"
    return handler.last_graph, langchain_core.__version__


def dspy_graph() -> tuple[Graph, str]:
    dspy = pytest.importorskip("dspy")
    from dspy.utils import DummyLM

    from opto_adapters.dspy import ProgramTarget

    program = dspy.Predict("question -> answer")
    output, graph = ProgramTarget(program, lm=DummyLM([{"answer": "4"}])).run({"question": "2+2?"})
    assert output.answer == "4"
    return graph, dspy.__version__


def agentchat_graph() -> tuple[Graph, str]:
    pytest.importorskip("autogen_agentchat")
    pytest.importorskip("autogen_ext")
    import asyncio
    from importlib.metadata import version

    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.replay import ReplayChatCompletionClient

    from opto_adapters.autogen import OptoAgent

    agent = OptoAgent(AssistantAgent("solver", ReplayChatCompletionClient(["4"]), system_message="Answer briefly."))
    result = asyncio.run(agent.run(task="2+2?"))
    assert result.messages[-1].content == "4"
    return agent.last_graph, version("autogen-agentchat")


def ag2_graph() -> tuple[Graph, str]:
    pytest.importorskip("autogen.agentchat")
    import autogen
    from autogen import ConversableAgent

    from opto_adapters.autogen.ag2 import AG2Target
    from opto_core.testing.scripted_server import ScriptedServer

    with ScriptedServer() as server:
        server.script("4 TERMINATE")
        assistant = ConversableAgent(
            "assistant", system_message="Answer briefly.", llm_config=server.llm_config(), human_input_mode="NEVER"
        )
        user = ConversableAgent(
            "user",
            llm_config=False,
            human_input_mode="NEVER",
            is_termination_msg=lambda m: "TERMINATE" in (m.get("content") or ""),
        )

        def chat(example: Any) -> str:
            return user.initiate_chat(assistant, message=example["question"], max_turns=1, silent=True).summary

        output, graph = AG2Target(chat, [assistant, user]).run({"question": "2+2?"})
    assert "4" in output
    return graph, autogen.__version__


ADAPTERS: dict[str, tuple[Callable[[], tuple[Graph, str]], str, str]] = {
    # name: (run, adapter module, framework distribution)
    "python": (python_graph, "opto_core.trace", "python"),
    "langchain": (langchain_graph, "opto_adapters.langchain", "langchain-core"),
    "dspy": (dspy_graph, "opto_adapters.dspy", "dspy"),
    "agentchat": (agentchat_graph, "opto_adapters.autogen", "autogen-agentchat"),
    "ag2": (ag2_graph, "opto_adapters.autogen.ag2", "autogen"),
}


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_every_adapter_writes_the_same_meta_keys_and_marks_its_output(name):
    run, adapter, framework = ADAPTERS[name]
    graph, framework_version = run()
    meta = graph.meta
    assert SHARED_KEYS <= set(meta), f"{name}: missing {sorted(SHARED_KEYS - set(meta))}"
    assert meta[META_ADAPTER] == adapter and meta[META_FRAMEWORK] == framework
    assert meta[META_FRAMEWORK_VERSION] == framework_version
    assert isinstance(meta[META_RUN_ID], str) and meta[META_RUN_ID]
    usage = meta[META_USAGE]
    assert isinstance(usage, dict) and set(usage) >= {"prompt_tokens", "completion_tokens"}
    assert all(isinstance(usage[k], int) and usage[k] >= 0 for k in ("prompt_tokens", "completion_tokens"))
    # the output is marked in the graph itself, not passed through meta
    outputs = [n for n in graph.nodes if n.kind == "output"]
    assert outputs and graph.outputs == outputs and outputs[0].edges
    assert "output_node" not in meta
    assert Graph.from_json(graph.to_json()).meta == meta  # the keys survive the file format


def test_the_shared_keys_are_the_same_set_everywhere():
    """Each adapter's graphs carry exactly the keys `run_meta` starts with (more keys may follow)."""
    graphs = {name: run()[0] for name, (run, _, _) in ADAPTERS.items()}
    assert set(run_meta("a", "b", "c")) == SHARED_KEYS
    run_ids = {g.meta[META_RUN_ID] for g in graphs.values()}
    assert len(run_ids) == len(graphs)  # a fresh id per run, whichever adapter recorded it


def test_capture_writes_the_shared_keys_too():
    with capture("plain") as run:

        @op
        def double(x: int) -> int:
            return 2 * x

        run.mark_output(double(run.input("x", 3)))
    meta = run.graph.meta
    assert meta[META_ADAPTER] == "opto_core.trace" and meta[META_FRAMEWORK] == "python"
    assert meta[META_FRAMEWORK_VERSION] == platform.python_version() and meta["run"] == "plain"
    assert meta[META_USAGE] == {"prompt_tokens": 0, "completion_tokens": 0} and meta["duration_s"] >= 0
    assert [n.value for n in run.graph.outputs] == [6]
