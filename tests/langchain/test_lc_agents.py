"""LangChain 1.x agents (create_agent), prompts kept in code, LangGraph credit, deploying saved values.

Real LangChain / LangGraph objects; only the chat model is fake (it records what each request carried).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, TypedDict
from uuid import uuid4

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import dynamic_prompt
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_core.tracers.schemas import Run
from langgraph.graph import END, START, MessagesState, StateGraph
from lc_chains import data_edges, edges, make_add_tool

from opto_adapters.langchain import ChainTarget, apply_values, parameters_of
from opto_adapters.langchain.testing import EchoChatModel
from opto_adapters.langchain.tracing.builder import Record, build_graph
from opto_adapters.langchain.tracing.links import Links
from opto_core.kernel.backward import backward
from opto_core.kernel.binding import UnknownParameters
from opto_core.kernel.feedback import Feedback
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.values import ValuesFileError, save_values

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def last(state: dict[str, Any]) -> str:
    return state["messages"][-1].content


def by_name(parameters):
    return {p.name: p for p in parameters}


# ----- create_agent --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["You are a support bot.", SystemMessage("You are a support bot.")])
def test_create_agent_system_prompt_is_a_parameter_whose_writes_reach_the_model(prompt):
    model = EchoChatModel(temperature=0.7)
    agent = create_agent(model, [make_add_tool()], system_prompt=prompt)
    params = by_name(parameters_of(agent))
    assert set(params) == {
        "model.system_prompt",
        "model.temperature",
        "model.max_tokens",
        "tools.add.code",
        "tools.add.description",
    }
    assert (
        params["model.system_prompt"].kind == "text" and params["model.system_prompt"].value == "You are a support bot."
    )
    target = ChainTarget(agent, output_fn=last)
    output, graph = target.run({"messages": [HumanMessage("where is my order?")]})
    assert output == "echo: where is my order?"
    model_op = next(n for n in graph.nodes if n.op_type == "chat_model")
    assert ("param:model.system_prompt", model_op.id, "messages[0]") in data_edges(graph)
    assert "model.system_prompt" in backward(graph, Feedback(0.0, "too long")).parameter_names
    target.apply({"model.system_prompt": "Answer in one line.", "model.temperature": 0.1})
    target.run({"messages": [HumanMessage("hi")]})
    assert model.calls[-1]["messages"][0] == {"type": "system", "content": "Answer in one line."}
    assert model.calls[-1]["temperature"] == 0.1
    asyncio.run(agent.ainvoke({"messages": [HumanMessage("async")]}))
    assert model.calls[-1]["messages"][0] == {"type": "system", "content": "Answer in one line."}
    snapshot_value = "Answer in one line."
    target.restore(target.snapshot())
    assert by_name(target.parameters())["model.system_prompt"].value == snapshot_value


def test_dynamic_prompt_middleware_with_a_parameter_used_by_the_model_node():
    """The documented pattern: the middleware returns ``param.value``; ``used_by="model"`` (the node)."""
    style = Parameter("agent.instructions", "text", "Answer in one word, please.", meta={"used_by": "model"})

    @dynamic_prompt
    def instructions(request) -> str:
        return style.value

    model = EchoChatModel()
    agent = create_agent(model, [], middleware=[instructions])
    target = ChainTarget(agent, [*parameters_of(agent), style], output_fn=last)
    output, graph = target.run({"messages": [HumanMessage("hello there")]})
    model_op = next(n for n in graph.nodes if n.op_type == "chat_model")
    assert ("param:agent.instructions", model_op.id, "messages[0]") in data_edges(graph)
    assert "agent.instructions" in backward(graph, Feedback(0.0, "wrong")).parameter_names  # not a dead end
    target.apply({"agent.instructions": "Answer in French."})
    target.run({"messages": [HumanMessage("hello")]})
    assert model.calls[-1]["messages"][0] == {"type": "system", "content": "Answer in French."}


# ----- prompts built in code -------------------------------------------------------------------------------
def _module(tmp_path: Path, monkeypatch, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_state_graph_node_prompt_from_a_module_constant(tmp_path, monkeypatch):
    """``from prompts import SYSTEM`` in the node's module: the copy the node reads is the one written."""
    suffix = uuid4().hex[:8]
    prompts = _module(tmp_path, monkeypatch, f"prompts_{suffix}", 'SYSTEM = "You are a weather bot."\n')
    nodes = _module(
        tmp_path,
        monkeypatch,
        f"nodes_{suffix}",
        f"""
        from langchain_core.messages import SystemMessage
        from prompts_{suffix} import SYSTEM

        def make(llm):
            def agent(state):
                return {{"messages": [llm.invoke([SystemMessage(SYSTEM), *state["messages"]])]}}
            return agent
        """,
    )
    model = EchoChatModel()
    builder = StateGraph(MessagesState)
    builder.add_node("agent", nodes.make(model))
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    app = builder.compile()
    params = by_name(parameters_of(app))
    assert params["agent.SYSTEM"].value == "You are a weather bot."
    target = ChainTarget(app, output_fn=last)
    output, graph = target.run({"messages": [HumanMessage("rain?")]})
    assert ("param:agent.SYSTEM", "EchoChatModel#0", "messages[0]") in data_edges(graph)
    assert "agent.SYSTEM" in backward(graph, Feedback(0.0, "no")).parameter_names
    target.apply({"agent.SYSTEM": "Answer with the temperature only."})
    target.run({"messages": [HumanMessage("rain?")]})
    assert model.calls[-1]["messages"][0] == {"type": "system", "content": "Answer with the temperature only."}
    assert prompts.SYSTEM == "You are a weather bot."  # the other module's name was not the one read


def test_closure_prompt_and_system_message_in_a_lambda_node():
    model = EchoChatModel()
    system = SystemMessage("Reply in French.")
    style = "Keep it short, at most ten words."

    def build_node():
        return lambda state: {"messages": [model.invoke([system, ("human", style), *state["messages"]])]}

    builder = StateGraph(MessagesState)
    builder.add_node("talk", build_node())
    builder.add_edge(START, "talk")
    app = builder.compile()
    params = by_name(parameters_of(app))
    assert {"lambda.system", "lambda.style"} <= set(params)
    target = ChainTarget(app, output_fn=last)
    _, graph = target.run({"messages": [HumanMessage("hello")]})
    flow = data_edges(graph)
    assert ("param:lambda.system", "EchoChatModel#0", "messages[0]") in flow
    assert ("param:lambda.style", "EchoChatModel#0", "messages[1]") in flow
    target.apply({"lambda.system": "Reply in German.", "lambda.style": "One word."})
    target.run({"messages": [HumanMessage("hello")]})
    assert [m["content"] for m in model.calls[-1]["messages"][:2]] == ["Reply in German.", "One word."]


# ----- LangGraph credit ----------------------------------------------------------------------------------------
def test_input_messages_are_credited_to_the_input_in_every_step():
    model = EchoChatModel()
    chain = ChatPromptTemplate.from_messages([("system", "You are helpful."), MessagesPlaceholder("messages")]) | model

    def first(state):
        return {"messages": [chain.invoke({"messages": state["messages"]})]}

    def second(state):
        return {"messages": [chain.invoke({"messages": state["messages"]})]}

    builder = StateGraph(MessagesState)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    app = builder.compile()
    _, graph = ChainTarget(app).run({"messages": [("human", "What is the capital of France?")]})
    flow = data_edges(graph)
    assert {
        ("messages#0", "ChatPromptTemplate#0", "messages[0]"),
        ("messages#0", "ChatPromptTemplate#1", "messages[0]"),
        ("messages#0", "second#0", "messages"),
    } <= flow
    assert not [e for e in flow if e[0] == "ChatPromptTemplate#0" and e[1] != "EchoChatModel#0"]


class Shelf(BaseRetriever):
    """A real LangChain retriever over fixed documents."""

    texts: list[str]

    def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
        return [Document(t) for t in self.texts]


class RagState(TypedDict):
    question: str
    context: str
    answer: str


def test_rag_retriever_inside_a_node_feeds_it_by_data():
    retriever = Shelf(texts=["Paris is the capital of France.", "The Seine flows through Paris."])
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("human", "{question}")])
    model = EchoChatModel()
    rag = (
        {
            "context": retriever | (lambda docs: "\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | model
        | StrOutputParser()
    )

    def retrieve(state):
        docs = retriever.invoke(state["question"])
        return {"context": "\n\n".join(d.page_content for d in docs)}

    def generate(state):
        return {"answer": rag.invoke(state["question"])}

    builder = StateGraph(RagState)
    builder.add_node("retrieve", retrieve)
    builder.add_node("generate", generate)
    builder.add_edge(START, "retrieve")
    builder.add_edge("retrieve", "generate")
    app = builder.compile()
    target = ChainTarget(app, output_fn=lambda s: s["answer"])
    output, graph = target.run({"question": "What is the capital of France?"})
    assert output == "echo: What is the capital of France?"
    assert ("Shelf#0", "retrieve#0", "Shelf", "data") in edges(graph)  # not "call_tree"
    assert any(e[0] == "Shelf#1" and e[3] == "data" for e in edges(graph))  # the LCEL chain's retriever
    assert "prompt.system" in backward(graph, Feedback(0.0, "wrong")).parameter_names


# ----- tool code never vanishes; deploying saved values -------------------------------------------------------
FIXED = 'def lookup_order(order_id: str) -> str:\n    """Look up an order\'s status."""\n    return f"order {order_id}: delivered"\n'


def test_applied_tool_code_survives_a_fresh_build_and_loading(tmp_path):
    import lc_agent_app

    agent, model = lc_agent_app.build()
    target = ChainTarget(agent)
    target.apply({"tools.lookup_order.code": FIXED, "model.system_prompt": "Be brief."})
    path = target.save_values(tmp_path / "values.json")
    del target, agent
    gc.collect()
    agent2, model2 = lc_agent_app.build()
    params = by_name(parameters_of(agent2))
    assert params["tools.lookup_order.code"].value == FIXED  # still findable
    applied = apply_values(agent2, path)
    assert applied["model.system_prompt"] == "Be brief."
    assert lc_agent_app.lookup_order.invoke({"order_id": "7"}) == "order 7: delivered"
    import inspect

    assert "delivered" in inspect.getsource(lc_agent_app.lookup_order.func)  # linecache keeps it


def test_save_then_apply_in_a_fresh_process_and_twice_in_one(tmp_path):
    import lc_agent_app

    agent, model = lc_agent_app.build()
    target = ChainTarget(agent)
    values = {
        "model.system_prompt": "You answer about orders only.",
        "model.temperature": 0.2,
        "model.max_tokens": 64,
        "tools.lookup_order.description": "Status of one order by id.",
    }
    target.apply(values)
    path = target.save_values(tmp_path / "values.json", score=1.0)
    doc = json.loads(Path(path).read_text())
    assert doc["format"] == "opto-values/1" and doc["meta"]["framework"] == "langchain-core"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HERE)!r})
        from langchain_core.messages import HumanMessage
        import lc_agent_app
        from opto_adapters.langchain import apply_values
        agent, model = lc_agent_app.build()
        applied = apply_values(agent, {str(path)!r})
        agent.invoke({{"messages": [HumanMessage("status?")]}})
        call = model.calls[-1]
        print(json.dumps({{"applied": sorted(applied), "system": call["messages"][0]["content"],
                           "temperature": call["temperature"], "max_tokens": call["max_tokens"],
                           "tool": call["tools"][0]["function"]["description"]}}))
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "applied": sorted(doc["values"]),
        "system": "You answer about orders only.",
        "temperature": 0.2,
        "max_tokens": 64,
        "tool": "Status of one order by id.",
    }
    for _ in range(2):  # twice in one process, each on a freshly built agent
        agent, model = lc_agent_app.build()
        apply_values(agent, path)
        agent.invoke({"messages": [HumanMessage("status?")]})
        assert model.calls[-1]["messages"][0]["content"] == "You answer about orders only."
        assert (model.calls[-1]["temperature"], model.calls[-1]["max_tokens"]) == (0.2, 64)


def test_apply_values_bad_input_writes_nothing(tmp_path):
    import lc_agent_app

    agent, model = lc_agent_app.build()
    with pytest.raises(UnknownParameters, match="model.system_prompt"):
        apply_values(agent, {"model.temperature": 0.1, "model.sytem_prompt": "x"})
    assert model.temperature == 0.7
    other = save_values(tmp_path / "dspy.json", {"qa.predict.instructions": "x"}, {"framework": "dspy"})
    with pytest.raises(ValuesFileError, match="dspy.*langchain"):
        apply_values(agent, other)


# ----- plain messages ----------------------------------------------------------------------------------------
def test_a_dict_example_with_keys_the_chain_does_not_read_warns_once():
    model = EchoChatModel()
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | model | StrOutputParser()
    target = ChainTarget(chain)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            target.run({"question": "hi", "answer": "hello"})
    messages = [str(w.message) for w in caught if "inputs of the chain" in str(w.message)]
    assert len(messages) == 1 and "['answer']" in messages[0]


# ----- the builder alone, fed hand-made records ----------------------------------------------------------------
def test_the_builder_takes_hand_made_records_and_links():
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    system = Parameter("bot.system", "text", "Be brief.", meta={"used_by": "bot"})
    root = Run(id=uuid4(), name="bot", run_type="chain", start_time=now, inputs={}, trace_id=uuid4(), dotted_order="a")
    chat = Run(
        id=uuid4(),
        name="FakeChat",
        run_type="chat_model",
        start_time=now,
        inputs={},
        trace_id=root.trace_id,
        parent_run_id=root.id,
        dotted_order="a.b",
    )
    root.child_runs.append(chat)
    question = HumanMessage("What is up?")
    reply = {"type": "ai", "content": "Not much."}
    from opto_adapters.langchain.tracing.snapshots import parts_of

    records = {
        root.id: Record(
            root,
            raw_in={"question": "What is up?"},
            inputs={"question": "What is up?"},
            raw_out="Not much.",
            outputs="Not much.",
        ),
        chat.id: Record(
            chat,
            raw_in=[SystemMessage("Be brief."), question],
            parts=parts_of([SystemMessage("Be brief."), question]),
            raw_out="Not much.",
            outputs=reply,
        ),
    }
    graph = build_graph(root, records, Links([system]))
    assert {"adapter", "framework", "framework_version", "run_id", "usage"} <= set(graph.meta)
    assert ("param:bot.system", "FakeChat#0", "messages[0]") in data_edges(graph)
    assert ("question#0", "FakeChat#0", "messages[1]") in data_edges(graph)
    (out,) = graph.outputs
    assert out.edges[0].id == "bot#0"
