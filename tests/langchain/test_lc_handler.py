"""OptoCallbackHandler on real LangChain / LangGraph objects: exact nodes and data-flow edges."""

from __future__ import annotations

import asyncio
import logging
import warnings

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableBranch, RunnableLambda, RunnableParallel, RunnablePassthrough
from lc_chains import data_edges, edges, fake, node_kinds, output_of, qa_prompt, state_graph, tool_loop_chain

from opto_adapters.langchain import OptoCallbackHandler, parameters_of
from opto_core.kernel.graph import Graph

QA_INPUT = {"role": "a bot", "question": "What is 2+2?"}


def handler() -> OptoCallbackHandler:
    return OptoCallbackHandler(raise_error=True)


def sequence_chain():
    return qa_prompt() | fake("four") | StrOutputParser() | RunnableLambda(lambda s: s.upper())


# ----- structure ---------------------------------------------------------------------------------------
def test_sequence_nodes_and_edges():
    h = handler()
    assert sequence_chain().invoke(QA_INPUT, config={"callbacks": [h]}) == "FOUR"
    g = h.last_graph
    assert node_kinds(g) == {
        "role#0": "input",
        "question#0": "input",
        "ChatPromptTemplate#0": "op",
        "GenericFakeChatModel#0": "op",
        "StrOutputParser#0": "op",
        "RunnableLambda#0": "op",
        "output#0": "output",
    }
    assert edges(g) == {
        ("role#0", "ChatPromptTemplate#0", "role", "data"),
        ("question#0", "ChatPromptTemplate#0", "question", "data"),
        ("ChatPromptTemplate#0", "GenericFakeChatModel#0", "messages", "data"),
        ("GenericFakeChatModel#0", "StrOutputParser#0", "input", "data"),
        ("StrOutputParser#0", "RunnableLambda#0", "input", "data"),
        ("RunnableLambda#0", "output#0", "value", "data"),
    }
    assert g["ChatPromptTemplate#0"].value == [
        {"type": "system", "content": "You are a bot."},
        {"type": "human", "content": "What is 2+2?"},
    ]
    assert g["GenericFakeChatModel#0"].value == {"type": "ai", "content": "four"}
    assert g["GenericFakeChatModel#0"].op_type == "chat_model"
    assert g["ChatPromptTemplate#0"].op_type == "prompt" and "You are {role}." in g["ChatPromptTemplate#0"].doc
    assert g.meta["adapter"] == "opto_adapters.langchain" and g.meta["run_name"] == "RunnableSequence"
    assert Graph.from_json(g.to_json()) == g


def test_parallel_keys_feed_the_next_step():
    chain = RunnableParallel(a=RunnableLambda(lambda x: x + 1), b=RunnableLambda(lambda x: x * 2)) | RunnableLambda(
        lambda d: d["a"] - d["b"]
    )
    h = handler()
    assert chain.invoke(5, config={"callbacks": [h]}) == -4
    g = h.last_graph
    assert node_kinds(g) == {
        "input#0": "input",
        "RunnableLambda#0": "op",
        "RunnableLambda#1": "op",
        "RunnableLambda#2": "op",
        "output#0": "output",
    }
    assert data_edges(g) == {
        ("input#0", "RunnableLambda#0", "input"),
        ("input#0", "RunnableLambda#1", "input"),
        ("RunnableLambda#0", "RunnableLambda#2", "a"),
        ("RunnableLambda#1", "RunnableLambda#2", "b"),
        ("RunnableLambda#2", "output#0", "value"),
    }
    assert [g["RunnableLambda#0"].value, g["RunnableLambda#1"].value, g["RunnableLambda#2"].value] == [6, 10, -4]


def test_parallel_as_output_is_collected():
    chain = RunnableParallel(up=RunnableLambda(str.upper), n=RunnableLambda(len))
    h = handler()
    assert chain.invoke("abc", config={"callbacks": [h]}) == {"up": "ABC", "n": 3}
    g = h.last_graph
    collect = output_of(g)
    assert g[collect].op_type == "collect" and g[collect].value == {"up": "ABC", "n": 3}
    assert {(e.id, e.arg) for e in g[collect].edges} == {("upper#0", "up"), ("len#0", "n")}


def test_branch_records_the_condition_as_control():
    chain = RunnableBranch((lambda x: x > 0, RunnableLambda(lambda x: "positive")), RunnableLambda(lambda x: "other"))
    h = handler()
    assert chain.invoke(3, config={"callbacks": [h]}) == "positive"
    g = h.last_graph
    assert node_kinds(g) == {
        "input#0": "input",
        "RunnableLambda#0": "op",
        "RunnableLambda#1": "op",
        "output#0": "output",
    }
    assert edges(g) == {
        ("input#0", "RunnableLambda#0", "input", "data"),
        ("input#0", "RunnableLambda#1", "input", "data"),
        ("RunnableLambda#0", "RunnableLambda#1", "condition", "control"),
        ("RunnableLambda#1", "output#0", "value", "data"),
    }
    assert g["RunnableLambda#0"].value is True


def _boom(x):
    raise ValueError("primary failed")


@pytest.mark.parametrize("nested", [False, True])
def test_fallbacks_are_reattached_and_ordered(nested):
    """LangChain detaches fallback attempts from RunnableWithFallbacks (#36072); they come back under it."""
    with_fallbacks = RunnableLambda(_boom).with_fallbacks([RunnableLambda(lambda x: x * 10)])
    chain = RunnableLambda(lambda x: x + 1) | with_fallbacks if nested else with_fallbacks
    h = handler()
    assert chain.invoke(3, config={"callbacks": [h]}) == (40 if nested else 30)
    assert len(h.graphs) == 1  # one top-level run, not three
    g = h.last_graph
    first = "RunnableLambda#1" if nested else "RunnableLambda#0"
    source = "RunnableLambda#0" if nested else "input#0"
    assert g["_boom#0"].kind == "exception" and g["_boom#0"].value == "ValueError: primary failed"
    assert edges(g) >= {
        (source, "_boom#0", "input", "data"),
        (source, first, "input", "data"),
        ("_boom#0", first, "previous_error", "control"),
        (first, "output#0", "value", "data"),
    }
    assert g.meta["reattached_runs"] == 2 and g["_boom#0"].meta["reattached"] is True
    assert [o.edges[0].id for o in g.outputs] == [first]  # the handled error is no output


def test_fallbacks_that_all_fail_point_the_output_at_the_error_raised():
    def also_fails(x):
        raise KeyError("backup failed too")

    chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(_boom).with_fallbacks([RunnableLambda(also_fails)])
    h = handler()
    with pytest.raises(ValueError, match="primary failed"):  # LangChain re-raises the first error
        chain.invoke(1, config={"callbacks": [h]})
    g = h.last_graph
    assert g["also_fails#0"].kind == "exception"
    assert ("_boom#0", "also_fails#0", "previous_error", "control") in edges(g)
    assert output_of(g) == "_boom#0" and g.meta["error"] == "ValueError: primary failed"


def test_assign_keeps_the_passthrough_keys():
    chain = RunnablePassthrough.assign(n=RunnableLambda(lambda d: len(d["q"]))) | RunnableLambda(lambda d: d["n"] * 2)
    h = handler()
    assert chain.invoke({"q": "abc"}, config={"callbacks": [h]}) == 6
    assert data_edges(h.last_graph) == {
        ("q#0", "RunnableLambda#0", "q"),
        ("q#0", "RunnableLambda#1", "q"),
        ("RunnableLambda#0", "RunnableLambda#1", "n"),
        ("RunnableLambda#1", "output#0", "value"),
    }


def test_a_run_that_raises_gives_an_exception_output():
    chain = qa_prompt() | RunnableLambda(_boom)
    h = handler()
    with pytest.raises(ValueError):
        chain.invoke(QA_INPUT, config={"callbacks": [h]})
    g = h.last_graph
    assert g["_boom#0"].kind == "exception"
    assert output_of(g) == "_boom#0"
    assert ("ChatPromptTemplate#0", "_boom#0", "input", "data") in edges(g)
    assert g.meta["error"].startswith("ValueError")


def test_retriever_parallel_and_passthrough_feed_the_prompt():
    from langchain_core.documents import Document
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever

    class Shelf(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=f"{query} is in France.", metadata={"source": "atlas"})]

    prompt = ChatPromptTemplate.from_messages([("human", "Context: {context}\nQuestion: {question}")])
    chain = (
        {
            "context": Shelf() | RunnableLambda(lambda docs: docs[0].page_content, name="join"),
            "question": RunnablePassthrough(),
        }
        | prompt
        | fake("France")
        | StrOutputParser()
    )
    h = handler()
    assert chain.invoke("Paris", config={"callbacks": [h]}) == "France"
    g = h.last_graph
    assert g["Shelf#0"].op_type == "retriever"
    assert g["Shelf#0"].value == [{"page_content": "Paris is in France.", "metadata": {"source": "atlas"}}]
    assert data_edges(g) == {
        ("input#0", "Shelf#0", "query"),
        ("Shelf#0", "join#0", "input"),
        ("join#0", "ChatPromptTemplate#0", "context"),
        ("input#0", "ChatPromptTemplate#0", "question"),  # through the passthrough
        ("ChatPromptTemplate#0", "GenericFakeChatModel#0", "messages"),
        ("GenericFakeChatModel#0", "StrOutputParser#0", "input"),
        ("StrOutputParser#0", "output#0", "value"),
    }


def test_text_llm_and_with_config_callbacks():
    from langchain_core.language_models.fake import FakeListLLM
    from langchain_core.prompts import PromptTemplate

    h = handler()
    chain = (PromptTemplate.from_template("Say {word}") | FakeListLLM(responses=["hi"])).with_config(callbacks=[h])
    assert chain.invoke({"word": "hi"}) == "hi"
    g = h.last_graph
    assert g["FakeListLLM#0"].op_type == "llm" and g["FakeListLLM#0"].value == "hi"
    assert data_edges(g) == {
        ("word#0", "PromptTemplate#0", "word"),
        ("PromptTemplate#0", "FakeListLLM#0", "prompt"),
        ("FakeListLLM#0", "output#0", "value"),
    }
    assert g["PromptTemplate#0"].value == "Say hi"


def test_opto_trace_needs_no_config():
    from opto_adapters.langchain import opto_trace

    with opto_trace() as h:
        sequence_chain().invoke(QA_INPUT)
        asyncio.run(sequence_chain().ainvoke(QA_INPUT))
    assert len(h.graphs) == 2 and all(len(g) == 7 for g in h.graphs)
    sequence_chain().invoke(QA_INPUT)  # outside the block: not traced
    assert len(h.graphs) == 2


# ----- tool calls and LangGraph ------------------------------------------------------------------------
def test_tool_loop_follows_tool_call_ids_and_messages():
    chain, add, model = tool_loop_chain()
    parameters = parameters_of(chain)
    h = OptoCallbackHandler(parameters, raise_error=True)
    assert chain.invoke("what is 1+2", config={"callbacks": [h]}) == "The sum is 3."
    g = h.last_graph
    assert node_kinds(g) == {
        "input#0": "input",
        "param:model.temperature": "parameter",
        "param:tools.add.description": "parameter",
        "param:tools.add.code": "parameter",
        "ToolCallingFakeModel#0": "op",
        "add#0": "op",
        "ToolCallingFakeModel#1": "op",
        "agent#0": "op",
        "output#0": "output",
    }
    assert data_edges(g) == {
        ("input#0", "ToolCallingFakeModel#0", "messages[0]"),  # HumanMessage(question): matched by its text
        ("param:model.temperature", "ToolCallingFakeModel#0", "temperature"),
        ("param:tools.add.description", "ToolCallingFakeModel#0", "tools[add].description"),
        ("ToolCallingFakeModel#0", "add#0", "tool_call"),  # AIMessage.tool_calls[0].id == the tool run's id
        ("param:tools.add.code", "add#0", "code"),
        ("param:tools.add.description", "add#0", "description"),
        ("input#0", "ToolCallingFakeModel#1", "messages[0]"),
        ("ToolCallingFakeModel#0", "ToolCallingFakeModel#1", "messages[1]"),  # by AIMessage.id
        ("add#0", "ToolCallingFakeModel#1", "messages[2]"),  # by ToolMessage.tool_call_id
        ("param:model.temperature", "ToolCallingFakeModel#1", "temperature"),
        ("param:tools.add.description", "ToolCallingFakeModel#1", "tools[add].description"),
        ("input#0", "agent#0", "input"),
        ("ToolCallingFakeModel#1", "agent#0", "ToolCallingFakeModel"),  # its reply is in agent's output
        ("agent#0", "output#0", "value"),
    }
    assert g["add#0"].value["content"] == "-1"  # the planted bug, visible in the trace
    assert "def add(a: int, b: int) -> int:" in g["param:tools.add.code"].value
    assert g["agent#0"].doc == "[agent] a chain step"  # ChainTarget adds the function's source (see its tests)


def test_langgraph_state_graph_with_conditional_edge():
    app, add, model = state_graph()
    h = OptoCallbackHandler(parameters_of(app), raise_error=True)
    result = app.invoke({"messages": [HumanMessage("what is 1+2")]}, config={"callbacks": [h]})
    assert result["messages"][-1].content == "The sum is 3."
    g = h.last_graph
    ops = {nid for nid, kind in node_kinds(g).items() if kind == "op"}
    assert ops == {
        "ToolCallingFakeModel#0",
        "tools_condition#0",
        "agent#0",
        "add#0",
        "tools#0",
        "ToolCallingFakeModel#1",
        "tools_condition#1",
        "agent#1",
        "LangGraph#0",
    }
    flow = data_edges(g)
    assert {
        ("messages#0", "ToolCallingFakeModel#0", "messages[0]"),
        ("ToolCallingFakeModel#0", "add#0", "tool_call"),
        ("messages#0", "ToolCallingFakeModel#1", "messages[0]"),
        ("ToolCallingFakeModel#0", "ToolCallingFakeModel#1", "messages[1]"),
        ("add#0", "ToolCallingFakeModel#1", "messages[2]"),
        ("ToolCallingFakeModel#0", "agent#0", "ToolCallingFakeModel"),
        ("add#0", "tools#0", "add"),
        ("messages#0", "LangGraph#0", "messages"),
        ("ToolCallingFakeModel#0", "LangGraph#0", "messages"),
        ("add#0", "LangGraph#0", "messages"),
        ("ToolCallingFakeModel#1", "LangGraph#0", "messages"),
    } <= flow
    # the routing function's choice is a control parent of the node it chose
    assert ("tools_condition#0", "tools#0", "route", "control") in edges(g)
    assert g["tools_condition#0"].value == "tools" and g["tools_condition#1"].value == "__end__"
    assert g["agent#0"].op_type == "langgraph_node" and g["agent#0"].meta["langgraph_step"] == 1
    assert output_of(g) == "LangGraph#0"
    # no call-tree fallback was needed: every value was matched
    assert all(via != "call_tree" for *_, via in edges(g))


def test_prebuilt_react_agent():
    from langgraph.prebuilt import create_react_agent as make_agent  # LangChain 1.x agents: test_lc_agents.py
    from lc_chains import make_add_tool, tool_model

    add = make_add_tool()
    model = tool_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = make_agent(model, [add], prompt="You are a calculator.")
    parameters = parameters_of(agent)
    assert {p.name for p in parameters} == {
        "model.temperature",
        "tools.add.code",
        "tools.add.description",
        "agent.system_prompt",
    }  # create_react_agent(prompt=...)
    h = OptoCallbackHandler(parameters, raise_error=True)
    agent.invoke({"messages": [HumanMessage("what is 1+2")]}, config={"callbacks": [h]})
    g = h.last_graph
    models = [n for n in g.nodes if n.op_type == "chat_model"]
    assert len(models) == 2 and len(model.calls) == 2
    assert models[0].value["tool_calls"][0]["name"] == "add"
    flow = data_edges(g)
    assert (models[0].id, "add#0", "tool_call") in flow
    # the second model call reads the tool's answer (through the agent's prompt step)
    second_prompt = next(e.id for e in models[1].edges if e.arg == "messages")
    assert ("add#0", second_prompt, "messages[2]") in flow
    assert ("param:model.temperature", models[1].id, "temperature") in flow
    assert {("param:agent.system_prompt", m.id, "messages[0]") for m in models} <= flow


# ----- ways of running --------------------------------------------------------------------------------------
def _qa_checks(g: Graph, question: str = "What is 2+2?") -> None:
    assert g.by_name("question")[0].value == question
    assert data_edges(g) >= {
        ("ChatPromptTemplate#0", "GenericFakeChatModel#0", "messages"),
        ("GenericFakeChatModel#0", "StrOutputParser#0", "input"),
    }


async def test_ainvoke_and_astream():
    h = handler()
    assert await sequence_chain().ainvoke(QA_INPUT, config={"callbacks": [h]}) == "FOUR"
    _qa_checks(h.last_graph)
    h = handler()
    chunks = [
        c
        async for c in (qa_prompt() | fake("four five") | StrOutputParser()).astream(
            QA_INPUT, config={"callbacks": [h]}
        )
    ]
    assert "".join(chunks) == "four five"
    g = h.last_graph
    _qa_checks(g)
    assert g["StrOutputParser#0"].value == "four five"  # streamed steps: their input arrives at the end
    assert g["GenericFakeChatModel#0"].value == {"type": "ai", "content": "four five"}


def test_stream():
    h = handler()
    chunks = list((qa_prompt() | fake("a b c") | StrOutputParser()).stream(QA_INPUT, config={"callbacks": [h]}))
    assert "".join(chunks) == "a b c" and len(chunks) > 1
    _qa_checks(h.last_graph)
    assert output_of(h.last_graph) == "StrOutputParser#0"


def test_batch_with_concurrency_gives_one_graph_per_input():
    chain = qa_prompt() | RunnableLambda(lambda v: v.messages[-1].content[::-1])
    h = handler()
    questions = [f"question {i}" for i in range(8)]
    out = chain.batch(
        [{"role": "r", "question": q} for q in questions], config={"callbacks": [h], "max_concurrency": 4}
    )
    assert out == [q[::-1] for q in questions]
    assert len(h.graphs) == 8
    for g in h.graphs:
        question = g.by_name("question")[0].value
        assert g["RunnableLambda#0"].value == question[::-1]  # no run leaked into another graph
        assert len(g) == 5


async def test_concurrent_async_runs_do_not_mix():
    chain = qa_prompt() | RunnableLambda(lambda v: v.messages[-1].content.upper())
    h = handler()
    questions = [f"q{i}" for i in range(10)]
    await asyncio.gather(*(chain.ainvoke({"role": "r", "question": q}, config={"callbacks": [h]}) for q in questions))
    assert sorted(g.by_name("question")[0].value for g in h.graphs) == sorted(questions)
    for g in h.graphs:
        assert g["RunnableLambda#0"].value == g.by_name("question")[0].value.upper()


# ----- values are copies; the handler does not get in the way ---------------------------------------------
def test_values_are_copied_when_recorded():
    def mutate(d):
        d["items"].append("added later")
        return d

    chain = RunnableLambda(lambda d: {"items": list(d["items"])}) | RunnableLambda(mutate)
    h = handler()
    shared = {"items": ["a"]}
    chain.invoke(shared, config={"callbacks": [h]})
    shared["items"].append("after the run")
    g = h.last_graph
    assert g["items#0"].value == ["a"]  # the input as it was when the run started
    assert g["RunnableLambda#0"].value == {"items": ["a"]}  # not the list mutated by the next step
    assert g["mutate#0"].value == {"items": ["a", "added later"]}


def test_the_handler_never_raises_into_the_chain(caplog):
    def broken(graph):
        raise RuntimeError("consumer bug")

    h = OptoCallbackHandler(on_graph=broken)
    with caplog.at_level(logging.WARNING, logger="opto.langchain"):
        assert sequence_chain().invoke(QA_INPUT, config={"callbacks": [h]}) == "FOUR"
    assert h.errors and "consumer bug" in h.errors[0]
    assert "consumer bug" in caplog.text
    assert h.last_graph is not None  # the graph was still recorded
    strict = OptoCallbackHandler(on_graph=broken, raise_error=True)
    with pytest.raises(RuntimeError, match="consumer bug"):
        sequence_chain().invoke(QA_INPUT, config={"callbacks": [strict]})


def test_graph_lookup_by_run_id_and_consuming_graphs():
    import uuid

    h = OptoCallbackHandler(max_graphs=2)
    ids = [uuid.uuid4() for _ in range(3)]
    for run_id in ids:
        sequence_chain().invoke(QA_INPUT, config={"callbacks": [h], "run_id": run_id})
    assert len(h.graphs) == 2 and h.graph_for(ids[0]) is None  # the oldest was dropped
    assert h.graph_for(ids[2]) is h.last_graph and h.last_graph.meta["run_id"] == str(ids[2])
    taken = h.pop_graphs()
    assert len(taken) == 2 and not h.graphs and h.last_graph is None and h.graph_for(ids[2]) is None
    assert not h._records and not h.run_map and not h.order_map  # nothing kept per run


def test_differential_same_output_with_and_without_handler():
    """The chain's output is identical with and without the handler, for every kind of workflow."""
    cases = [
        (lambda: sequence_chain(), QA_INPUT),
        (lambda: RunnableParallel(a=RunnableLambda(lambda x: x + 1), b=RunnableLambda(lambda x: [x] * 2)), 4),
        (lambda: RunnableLambda(_boom).with_fallbacks([RunnableLambda(lambda x: x * 10)]), 2),
        (lambda: tool_loop_chain()[0], "what is 1+2"),
        (lambda: state_graph()[0], {"messages": [HumanMessage("what is 1+2")]}),
    ]
    for build, value in cases:
        plain = build().invoke(value)
        h = handler()
        traced = build().invoke(value, config={"callbacks": [h]})
        if isinstance(plain, dict) and "messages" in plain:  # message ids are fresh per run
            plain = [(m.type, m.content) for m in plain["messages"]]
            traced = [(m.type, m.content) for m in traced["messages"]]
        assert traced == plain
        assert h.last_graph is not None and not h.errors


def test_a_text_built_from_an_earlier_answer_inside_a_hidden_step_is_data():
    """Inside a lambda, the second model's prompt is an f-string around the first chain's answer:
    the core's provenance index finds the answer inside the longer text (containment)."""
    first = qa_prompt() | fake("The answer is four.") | StrOutputParser()
    second = fake("Polished: four.")

    def polish(inputs):
        draft = first.invoke(inputs)
        return second.invoke(f"Improve this draft: {draft}").content

    h = handler()
    assert RunnableLambda(polish).invoke(QA_INPUT, config={"callbacks": [h]}) == "Polished: four."
    g = h.last_graph
    polish_model = next(
        n.id for n in g.nodes if n.name == "GenericFakeChatModel" and n.value["content"].startswith("Polished")
    )
    assert ("StrOutputParser#0", polish_model, "data") in {(s, t, v) for s, t, _, v in edges(g)}
    assert not any(t == polish_model and v == "call_tree" for _, t, _, v in edges(g))  # nothing left to guess
