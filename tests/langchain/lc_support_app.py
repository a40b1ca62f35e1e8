"""A LangGraph support agent whose node builds its system prompt in code, in every spelling tutorials use.

Each ``*_node`` is the same agent step (format the system prompt, call the model with a tool) written
another way: ``.format`` of a module template, an f-string, ``%``, ``+`` of constants, a local alias, a
``ChatPromptTemplate`` built inside the node from the module template, one built from a literal, and a
helper function of the module that formats the template.
`build(spelling, llm)` compiles a ``StateGraph`` with a ``ToolNode`` around the chosen node.
"""

from __future__ import annotations

from langchain_core.messages import SystemMessage
from langchain_core.prompts import ChatPromptTemplate, SystemMessagePromptTemplate
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

SYSTEM_TEMPLATE = "You are the support agent of {company}. Today is {today}."
PERCENT_TEMPLATE = "You are the support agent of %s. Today is %s."
RULES = "Never promise a delivery date."


@tool
def lookup_order(order_id: str) -> str:
    """Look up the status of an order by its id."""
    return f"order {order_id}: shipped"


class SupportState(MessagesState):
    company: str
    today: str


def system_for(state):
    """The system prompt for this customer (a helper the node calls)."""
    return SYSTEM_TEMPLATE.format(company=state["company"], today=state["today"])


def make_nodes(llm):
    model = llm.bind_tools([lookup_order])

    def format_node(state):
        system = SystemMessage(content=SYSTEM_TEMPLATE.format(company=state["company"], today=state["today"]))
        return {"messages": [model.invoke([system, *state["messages"]])]}

    def fstring_node(state):
        system = SystemMessage(content=f"You are the support agent of {state['company']}. Today is {state['today']}.")
        return {"messages": [model.invoke([system, *state["messages"]])]}

    def percent_node(state):
        system = SystemMessage(PERCENT_TEMPLATE % (state["company"], state["today"]))
        return {"messages": [model.invoke([system, *state["messages"]])]}

    def plus_node(state):
        system = SystemMessage("You are the support agent of " + state["company"] + ". " + RULES)
        return {"messages": [model.invoke([system, *state["messages"]])]}

    def alias_node(state):
        template = SYSTEM_TEMPLATE
        text = template.format(company=state["company"], today=state["today"])
        return {"messages": [model.invoke([SystemMessage(text), *state["messages"]])]}

    def prompt_node(state):
        prompt = ChatPromptTemplate.from_messages([("system", SYSTEM_TEMPLATE), ("placeholder", "{messages}")])
        return {"messages": [(prompt | model).invoke(state)]}

    def literal_prompt_node(state):
        prompt = ChatPromptTemplate.from_messages(
            [
                SystemMessagePromptTemplate.from_template("You support {company}'s customers. Today is {today}."),
                ("placeholder", "{messages}"),
            ]
        )
        return {"messages": [(prompt | model).invoke(state)]}

    def helper_node(state):
        return {"messages": [model.invoke([SystemMessage(system_for(state)), *state["messages"]])]}

    return {
        "helper": helper_node,
        "format": format_node,
        "fstring": fstring_node,
        "percent": percent_node,
        "plus": plus_node,
        "alias": alias_node,
        "prompt": prompt_node,
        "literal_prompt": literal_prompt_node,
    }


def build(spelling: str, llm):
    builder = StateGraph(SupportState)
    builder.add_node("agent", make_nodes(llm)[spelling])
    builder.add_node("tools", ToolNode([lookup_order]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()
