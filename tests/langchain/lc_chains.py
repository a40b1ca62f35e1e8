"""Real LangChain / LangGraph workflows with fake models, shared by the LangChain adapter tests."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from opto_adapters.langchain.testing import ToolCallingFakeModel
from opto_core.kernel.graph import Graph


def node_kinds(graph: Graph) -> dict[str, str]:
    return {node.id: node.kind for node in graph.nodes}


def edges(graph: Graph) -> set[tuple[str, str, str, str]]:
    """Every edge as (parent id, child id, argument, how it was found)."""
    return {(e.id, node.id, e.arg, e.via) for node in graph.nodes for e in node.edges}


def data_edges(graph: Graph) -> set[tuple[str, str, str]]:
    return {(p, c, a) for p, c, a, via in edges(graph) if via == "data"}


def output_of(graph: Graph) -> str:
    (out,) = graph.outputs
    return out.edges[0].id


def fake(*texts: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(t) for t in texts]))


def qa_prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", "You are {role}."), ("human", "{question}")])


def make_add_tool():
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a - b  # planted bug

    return add


def tool_model() -> ToolCallingFakeModel:
    return ToolCallingFakeModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1"}]),
            AIMessage("The sum is 3."),
        ]
    )


def tool_loop_chain() -> tuple[Any, Any, ToolCallingFakeModel]:
    """A hand-written tool-calling loop in a RunnableLambda: model -> tool -> model."""
    add = make_add_tool()
    model = tool_model()
    llm = model.bind_tools([add])

    def agent(question: str) -> str:
        messages: list[Any] = [HumanMessage(question)]
        reply = llm.invoke(messages)
        messages.append(reply)
        for call in reply.tool_calls:
            messages.append(add.invoke(call))
        return llm.invoke(messages).content

    return RunnableLambda(agent), add, model


def state_graph() -> tuple[Any, Any, ToolCallingFakeModel]:
    """A LangGraph StateGraph: agent node, ToolNode, conditional edge (tools_condition)."""
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    add = make_add_tool()
    model = tool_model()
    llm = model.bind_tools([add])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([add]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(), add, model
