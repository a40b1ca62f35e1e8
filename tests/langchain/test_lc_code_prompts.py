"""Prompts built in code are parameters that get credit, and a write reaches the next request.

Real LangGraph graphs (``StateGraph`` + ``ToolNode``), LangChain 1.x agents and an LCEL RAG chain; the
model is langchain-openai's ``ChatOpenAI`` talking HTTP to a scripted OpenAI-compatible server on
127.0.0.1, so every assertion about a write is checked in the request the server received.
"""

from __future__ import annotations

import gc
import importlib
from dataclasses import dataclass

import lc_support_app
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import dynamic_prompt
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from opto_adapters.langchain import ChainTarget, apply_values, parameters_of
from opto_core import Parameter, coverage
from opto_core.kernel.backward import backward
from opto_core.kernel.binding import UnknownParameters
from opto_core.kernel.feedback import Feedback
from opto_core.testing.scripted_server import ScriptedServer, system_text, tool_call


@pytest.fixture
def server():
    with ScriptedServer() as scripted:
        yield scripted


@pytest.fixture
def app_module():
    """A fresh copy of the app's module globals for every test (writes change them). Parameters found in
    an earlier test are collected first: a module global keeps the name it was first found under."""
    gc.collect()
    yield importlib.reload(lc_support_app)
    importlib.reload(lc_support_app)


def chat_model(server, **settings):
    return ChatOpenAI(base_url=server.base_url, api_key="scripted", model="scripted", max_retries=0, **settings)


def last(state):
    return state["messages"][-1].content


def support_example(company="ACME", today="Monday"):
    return {"messages": [HumanMessage("Where is order 42?")], "company": company, "today": today}


def one_support_run(server):
    server.script(tool_call("lookup_order", order_id="42"), "Order 42 has shipped.")


#: spelling -> (parameter name, its value, a new value, the system text the next request must carry)
SPELLINGS = {
    "format": (
        "format_node.SYSTEM_TEMPLATE",
        lc_support_app.SYSTEM_TEMPLATE,
        "Support for {company} ({today}): be brief.",
        "Support for Initech (Tuesday): be brief.",
    ),
    "helper": (
        "helper_node.SYSTEM_TEMPLATE",
        lc_support_app.SYSTEM_TEMPLATE,
        "Support for {company} ({today}): be brief.",
        "Support for Initech (Tuesday): be brief.",
    ),
    "alias": (
        "alias_node.SYSTEM_TEMPLATE",
        lc_support_app.SYSTEM_TEMPLATE,
        "Support for {company} ({today}): be brief.",
        "Support for Initech (Tuesday): be brief.",
    ),
    "prompt": (
        "prompt_node.SYSTEM_TEMPLATE",
        lc_support_app.SYSTEM_TEMPLATE,
        "Support for {company} ({today}): be brief.",
        "Support for Initech (Tuesday): be brief.",
    ),
    "fstring": (
        "fstring_node.system_prompt",
        "You are the support agent of {company}. Today is {today}.",
        "Support for {company} ({today}): be brief.",
        "Support for Initech (Tuesday): be brief.",
    ),
    "percent": (
        "percent_node.PERCENT_TEMPLATE",
        lc_support_app.PERCENT_TEMPLATE,
        "Support for %s (%s): be brief.",
        "Support for Initech (Tuesday): be brief.",
    ),
    "plus": (
        "plus_node.system_prompt",
        "You are the support agent of {company}. {RULES}",
        "{RULES} You support {company}.",
        "Never promise a delivery date. You support Initech.",
    ),
    "literal_prompt": (
        "literal_prompt_node.system_prompt",
        "You support {company}'s customers. Today is {today}.",
        "Support for {company} ({today}): be brief.",
        "Support for Initech (Tuesday): be brief.",
    ),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_a_node_prompt_built_in_code_is_credited_and_written_back(spelling, server, app_module):
    name, value, new_value, new_text = SPELLINGS[spelling]
    app = app_module.build(spelling, chat_model(server))
    found = {p.name: p for p in parameters_of(app)}
    assert found[name].value == value
    target = ChainTarget(app, output_fn=last)
    one_support_run(server)
    output, graph = target.run(support_example())
    assert output == "Order 42 has shipped."
    assert (
        "ACME" in system_text(server.requests[0]) and "Monday" in system_text(server.requests[0]) or spelling == "plus"
    )
    credited = backward(graph, Feedback(0.0, "the customer wanted a date")).parameter_names
    assert name in credited
    models = [n for n in graph.nodes if n.op_type == "chat_model"]
    assert len(models) == 2 and all(f"param:{name}" in m.parents for m in models)  # the calls that received it
    how = {e.match for m in models for e in m.edges if e.id == f"param:{name}"}
    assert how == {"template"}  # the filled-in text, matched to the template (for + too: its constant parts)
    one_support_run(server)
    report = coverage(target, [support_example()])
    assert report[name].reached and report[name].cause == "reached" and report[name].path[0] == name
    target.apply({name: new_value})
    one_support_run(server)
    _, graph = target.run(support_example("Initech", "Tuesday"))
    assert system_text(server.requests[-1]) == new_text
    assert system_text(server.requests[-2]) == new_text  # both calls of the run, the one after the tool too
    assert name in backward(graph, Feedback(0.0, "still no date")).parameter_names  # credited after the write too
    one_support_run(server)
    assert coverage(target, [support_example("Initech", "Tuesday")])[name].reached


def test_a_template_keeps_its_placeholders(server, app_module):
    app = app_module.build("format", chat_model(server))
    target = ChainTarget(app, output_fn=last)
    with pytest.raises(ValueError, match=r"\{today\}"):
        target.apply({"format_node.SYSTEM_TEMPLATE": "Support for {company}."})  # dropped {today}
    with pytest.raises(ValueError, match=r"\{mood\}"):
        target.apply({"format_node.SYSTEM_TEMPLATE": "Support for {company} ({today}), {mood}."})  # invented
    assert app_module.SYSTEM_TEMPLATE == lc_support_app.SYSTEM_TEMPLATE  # nothing was written


def test_plus_of_constants_credits_each_constant(server, app_module):
    app = app_module.build("plus", chat_model(server))
    target = ChainTarget(app, output_fn=last)
    one_support_run(server)
    _, graph = target.run(support_example())
    credited = backward(graph, Feedback(0.0, "no")).parameter_names
    assert {"plus_node.system_prompt", "plus_node.RULES"} <= set(credited)
    target.apply({"plus_node.RULES": "Always give the delivery date."})
    one_support_run(server)
    target.run(support_example())
    assert system_text(server.requests[-1]) == "You are the support agent of ACME. Always give the delivery date."


def test_a_parameter_nothing_reads_is_reported_unreached_with_its_reason(server, app_module):
    app = app_module.build("format", chat_model(server))
    unused = Parameter("agent.tone", "text", "Be cheerful and use emojis.", meta={"used_by": "agent"})
    target = ChainTarget(app, [*parameters_of(app), unused], output_fn=last)
    one_support_run(server)
    report = coverage(target, [support_example()])
    assert report["format_node.SYSTEM_TEMPLATE"].reached
    tone = report["agent.tone"]
    assert not tone.reached and tone.cause == "off_path" and "it feeds agent" in tone.reason
    assert "no model call inside them received its text" in tone.fix  # the LangChain target's own fix
    assert "agent.tone" in report.unreached and "agent.tone" in report.warning()


# ----- your own Parameter, formatted by the node --------------------------------------------------------------
def test_your_template_parameter_is_credited_to_the_model_call_that_received_it(server, app_module):
    instructions = Parameter(
        "agent.instructions", "text", "You are the support agent of {company}. Be brief.", meta={"used_by": "agent"}
    )

    def agent(state):
        system = SystemMessage(content=instructions.value.format(company=state["company"]))
        return {"messages": [model.invoke([system, *state["messages"]])]}

    model = chat_model(server).bind_tools([app_module.lookup_order])
    builder = StateGraph(app_module.SupportState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([app_module.lookup_order]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    app = builder.compile()
    target = ChainTarget(app, [*parameters_of(app), instructions], output_fn=last)
    one_support_run(server)
    _, graph = target.run(support_example())
    models = [n for n in graph.nodes if n.op_type == "chat_model"]
    edges = [e for m in models for e in m.edges if e.id == "param:agent.instructions"]
    assert len(edges) == 2 and {e.match for e in edges} == {"template"}  # the model calls, not only the node
    assert "agent.instructions" in backward(graph, Feedback(0.0, "no")).parameter_names
    one_support_run(server)
    assert coverage(target, [support_example()])["agent.instructions"].reached
    target.apply({"agent.instructions": "Support for {company}: answer in five words."})
    one_support_run(server)
    target.run(support_example("Initech"))
    assert system_text(server.requests[-1]) == "Support for Initech: answer in five words."


# ----- LangChain 1.x agents: @dynamic_prompt, a runtime context, create_react_agent(prompt=) -------------------
PERSONA = "You are the assistant of {user_name}. Answer in one sentence."


@dataclass
class UserContext:
    user_name: str


@dynamic_prompt
def personalized(request) -> str:
    return PERSONA.format(user_name=request.runtime.context.user_name)


def test_dynamic_prompt_middleware_template_with_a_runtime_context_per_example(server):
    agent = create_agent(chat_model(server), [], middleware=[personalized], context_schema=UserContext)
    target = ChainTarget(
        agent, context=lambda example: UserContext(example["user"]), input_keys=["messages"], output_fn=last
    )
    assert target.bound["personalized.PERSONA"].value == PERSONA
    server.script("Hello Ann.", "Hello Bob.")
    _, graph = target.run({"messages": [HumanMessage("hi")], "user": "Ann"})
    assert system_text(server.requests[-1]) == "You are the assistant of Ann. Answer in one sentence."
    assert "personalized.PERSONA" in backward(graph, Feedback(0.0, "too formal")).parameter_names
    before = target.snapshot()
    try:
        target.apply({"personalized.PERSONA": "Greet {user_name} by name, casually."})
        assert PERSONA == "Greet {user_name} by name, casually."  # this module's constant is the one written
        target.run({"messages": [HumanMessage("hi")], "user": "Bob"})
        assert system_text(server.requests[-1]) == "Greet Bob by name, casually."
    finally:
        target.restore(before)
    assert PERSONA == "You are the assistant of {user_name}. Answer in one sentence."
    server.script("Hi Cy.")
    assert coverage(target, [{"messages": [HumanMessage("hi")], "user": "Cy"}])["personalized.PERSONA"].reached


def test_create_react_agent_prompt_is_credited_and_written(server):
    import warnings

    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(
            chat_model(server),
            [lc_support_app.lookup_order],
            prompt="You track orders. Quote the status word for word.",
        )
    target = ChainTarget(agent, output_fn=last)
    assert target.bound["agent.system_prompt"].value == "You track orders. Quote the status word for word."
    one_support_run(server)
    _, graph = target.run({"messages": [HumanMessage("Where is order 42?")]})
    assert "agent.system_prompt" in backward(graph, Feedback(0.0, "no")).parameter_names
    target.apply({"agent.system_prompt": "You track orders; be brief."})
    one_support_run(server)
    target.run({"messages": [HumanMessage("Where is order 42?")]})
    assert system_text(server.requests[-1]) == "You track orders; be brief."
    one_support_run(server)
    assert coverage(target, [{"messages": [HumanMessage("Where is order 42?")]}])["agent.system_prompt"].reached


def test_deploying_your_own_parameter_with_apply_values(server, tmp_path):
    def build(instructions):
        @dynamic_prompt
        def style(request) -> str:
            return instructions.value

        return create_agent(chat_model(server), [], middleware=[style])

    mine = Parameter("agent.instructions", "text", "Answer in one word.", meta={"used_by": "model"})
    target = ChainTarget(build(mine), [mine], output_fn=last)
    target.apply({"agent.instructions": "Answer in French."})
    target.save_values(tmp_path / "values.json")
    fresh_parameter = Parameter("agent.instructions", "text", "Answer in one word.", meta={"used_by": "model"})
    agent = build(fresh_parameter)
    with pytest.raises(UnknownParameters, match=r"parameters=\[\.\.\.\]"):
        apply_values(agent, tmp_path / "values.json")
    assert apply_values(agent, tmp_path / "values.json", parameters=[fresh_parameter]) == {
        "agent.instructions": "Answer in French."
    }
    server.script("Bonjour.")
    agent.invoke({"messages": [HumanMessage("hi")]})
    assert system_text(server.requests[-1]) == "Answer in French."


def test_a_template_formatted_straight_into_llm_invoke(user_module):
    from opto_adapters.langchain.testing import EchoChatModel

    app_code = user_module(
        '''
        QUESTION_TEMPLATE = "Answer for the customers of {company}: {question}"

        def make(llm, retriever):
            def ask(state):
                docs = retriever.invoke(f"policy of {state['company']}")  # not a model: no prompt
                return {"answer": llm.invoke(QUESTION_TEMPLATE.format(company=state["company"],
                                                                      question=state["question"])).content}
            return ask
        ''',
        "lc_invoke_app",
    )
    model = EchoChatModel()

    class Shelf:
        def invoke(self, query):
            return []

    chain = RunnableLambda(app_code.make(model, Shelf()))
    target = ChainTarget(chain, input_keys=["company", "question"])
    assert [p.name for p in target.parameters() if p.name.startswith("ask.")] == ["ask.QUESTION_TEMPLATE"]
    output, graph = target.run({"company": "ACME", "question": "When do you ship?"})
    assert output["answer"] == "echo: Answer for the customers of ACME: When do you ship?"
    assert "ask.QUESTION_TEMPLATE" in backward(graph, Feedback(0.0, "no")).parameter_names
    target.apply({"ask.QUESTION_TEMPLATE": "{company} asks: {question}"})
    target.run({"company": "ACME", "question": "When?"})
    assert model.calls[-1]["messages"] == [{"type": "human", "content": "ACME asks: When?"}]


# ----- the loop: one warning, the step record, the report, require_coverage --------------------------------
def support_model(request):
    """The support model: looks the order up, then quotes the tool's answer."""
    if request["messages"][-1]["role"] == "tool":
        return "Order 42 has shipped."
    return tool_call("lookup_order", order_id="42")


def test_the_loop_reports_an_unused_parameter_of_a_langgraph_app_once_and_in_the_report(app_module, tmp_path, caplog):
    import json
    import logging

    from opto_core import CoverageError, OptoPrime, optimize, write_report
    from opto_core.testing import ScriptedLLM

    server = ScriptedServer([support_model], repeat_last=True).start()
    app = app_module.build("format", chat_model(server))
    unused = Parameter("agent.tone", "text", "Be cheerful and use emojis.", meta={"used_by": "agent"})
    target = ChainTarget(
        app, [*parameters_of(app), unused], include=["format_node.SYSTEM_TEMPLATE", "agent.tone"], output_fn=last
    )
    new_template = "You support {company} (today is {today}); quote the order status."
    llm = ScriptedLLM(
        [json.dumps({"reasoning": "quote the status", "suggestion": {"format_node.SYSTEM_TEMPLATE": new_template}})],
        repeat_last=True,
    )
    examples = [support_example(), support_example("Initech", "Tuesday")]
    score = lambda example, output: Feedback(1.0 if "shipped" in output else 0.0, "say whether it shipped")  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="opto"):
        result = optimize(
            target,
            examples,
            score,
            OptoPrime(target.parameters(), llm),
            max_steps=1,
            batch_size=2,
            run_dir=str(tmp_path),
        )
    warnings = [r.getMessage() for r in caplog.records if "feedback cannot reach" in r.getMessage()]
    assert len(warnings) == 1 and "agent.tone: seen off the path to the output" in warnings[0]
    assert "format_node.SYSTEM_TEMPLATE" not in warnings[0]
    assert result.history[0]["coverage"]["unreached"] == ["agent.tone"]
    assert "format_node.SYSTEM_TEMPLATE" in llm.requests[0]["messages"][-1]["content"]  # shown to the optimizer
    assert "agent.tone" not in llm.requests[0]["messages"][-1]["content"]
    assert app_module.SYSTEM_TEMPLATE == new_template  # the write reached the program...
    assert system_text(server.requests[-1]).startswith("You support Initech (today is Tuesday)")  # ...and its requests
    page = write_report(tmp_path).read_text()
    assert "<h2>Coverage</h2>" in page and "agent.tone" in page
    with pytest.raises(CoverageError, match="agent.tone") as raised:
        optimize(target, examples, score, OptoPrime(target.parameters(), llm), max_steps=1, require_coverage=True)
    assert len(llm.requests) == 1 and raised.value.coverage.unreached == ["agent.tone"]  # no optimizer call
    server.stop()
