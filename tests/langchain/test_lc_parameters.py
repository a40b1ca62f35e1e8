"""Parameter discovery and write-back, checked in what the next run actually sends to the model."""

from __future__ import annotations

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from lc_chains import make_add_tool, qa_prompt, state_graph, tool_loop_chain

from opto_adapters.langchain import ChainTarget, NoParametersFound, OptoCallbackHandler, parameters_of
from opto_adapters.langchain.parameters import TAG_KEY
from opto_adapters.langchain.testing import EchoChatModel
from opto_core.kernel.parameters import InvalidValue, Parameter

QA = {"role": "a bot", "question": "What is 2+2?"}


def echo_chain():
    model = EchoChatModel(temperature=0.7, max_tokens=128)
    prompt = qa_prompt()
    return prompt | model | StrOutputParser(), prompt, model


def by_name(parameters):
    return {p.name: p for p in parameters}


# ----- discovery -----------------------------------------------------------------------------------------
def test_discovers_templates_and_model_settings_with_bounds():
    chain, prompt, model = echo_chain()
    params = by_name(parameters_of(chain))
    assert list(params) == ["prompt.system", "prompt.human", "model.temperature", "model.max_tokens"]
    assert params["prompt.system"].kind == "text" and params["prompt.system"].value == "You are {role}."
    assert params["model.temperature"].kind == "float" and params["model.temperature"].value == 0.7
    assert (params["model.temperature"].lower, params["model.temperature"].upper) == (0.0, 2.0)
    # the core's rule (opto_core.kernel.ranges): room for a short answer, up to 1,024 (4 times the current 128 is less)
    assert (params["model.max_tokens"].kind, params["model.max_tokens"].lower, params["model.max_tokens"].upper) == (
        "int",
        64,
        1024,
    )
    # top_p is a field of the model but not set: not a parameter
    assert "model.top_p" not in params
    # the objects are tagged through their own metadata (merged with what was there)
    assert prompt.metadata[TAG_KEY].startswith("prompt@") and model.metadata[TAG_KEY].startswith("model@")
    # a second call returns the same Parameter objects (values stay in sync)
    assert parameters_of(chain)[0] is params["prompt.system"]


def test_discovers_tools_and_models_inside_functions_and_langgraph_nodes():
    chain, add, model = tool_loop_chain()
    names = [p.name for p in parameters_of(chain)]
    assert names == ["model.temperature", "tools.add.code", "tools.add.description"]
    app, _, _ = state_graph()
    params = by_name(parameters_of(app))
    assert set(params) == {"model.temperature", "tools.add.code", "tools.add.description"}
    assert params["tools.add.code"].kind == "code"
    assert params["tools.add.code"].value.startswith("def add(a: int, b: int) -> int:")  # decorator stripped


def test_prompt_template_and_several_prompts_get_distinct_names():
    first = PromptTemplate.from_template("Summarize: {text}")
    second = ChatPromptTemplate.from_messages([("human", "{a}"), ("human", "and {b}")])
    chain = RunnableParallel(x=first, y=second)
    assert [p.name for p in parameters_of(chain)] == ["prompt.template", "prompt_2.human", "prompt_2.human_2"]


def test_include_exclude_and_globs():
    chain, _, _ = echo_chain()
    assert [p.name for p in parameters_of(chain, include=["prompt.*"])] == ["prompt.system", "prompt.human"]
    assert [p.name for p in parameters_of(chain, exclude=["*.max_tokens", "prompt.human"])] == [
        "prompt.system",
        "model.temperature",
    ]
    with pytest.raises(NoParametersFound, match="include names no parameter"):
        parameters_of(chain, include=["nothing.*"])


def test_no_parameter_is_a_clear_error_listing_what_was_inspected():
    chain = RunnableLambda(lambda x: x + 1) | StrOutputParser()
    with pytest.raises(NoParametersFound) as info:
        parameters_of(chain)
    message = str(info.value)
    assert "no prompt template, chat model setting or tool function was found" in message
    assert "root: RunnableSequence" in message and "StrOutputParser" in message
    with pytest.raises(NoParametersFound, match="all 4 found were excluded"):
        parameters_of(echo_chain()[0], exclude=["*"])


# ----- write-back, checked in what the model receives ---------------------------------------------------------
def test_prompt_and_temperature_reach_the_model():
    chain, prompt, model = echo_chain()
    target = ChainTarget(chain)
    target.run(QA)
    assert model.calls[-1]["messages"][0] == {"type": "system", "content": "You are a bot."}
    assert model.calls[-1]["temperature"] == 0.7
    target.apply(
        {"prompt.system": "You are {role}. Answer with one number.", "model.temperature": 0.1, "model.max_tokens": 96}
    )
    output, graph = target.run(QA)
    call = model.calls[-1]
    assert call["messages"][0] == {"type": "system", "content": "You are a bot. Answer with one number."}
    assert (call["temperature"], call["max_tokens"]) == (0.1, 96)
    # the trace shows the new values, not LangChain's cached serialization of the old ones
    assert graph["param:model.temperature"].value == 0.1
    assert "temperature=0.1" in graph["EchoChatModel#0"].doc
    assert "You are {role}. Answer with one number." in graph["ChatPromptTemplate#0"].doc
    # LangChain's cached serialization (what callbacks receive as `serialized`) was refreshed too
    assert (
        prompt._serialized["kwargs"]["messages"][0]["kwargs"]["prompt"]["kwargs"]["template"]
        == "You are {role}. Answer with one number."
    )


@pytest.mark.parametrize(
    "update, reason",
    [
        ({"prompt.system": "You are helpful."}, "must keep the variable(s) {role}"),
        ({"prompt.system": "You are {role}, {mood}."}, "unknown variable(s) {mood}"),
        ({"prompt.system": "You are {role"}, "does not parse as a f-string template"),
        ({"model.temperature": 3.5}, "above the upper bound 2.0"),
        ({"model.temperature": "hot"}, "expected a float"),
        ({"model.max_tokens": 0}, "below the lower bound 64"),
    ],
)
def test_bad_values_are_rejected_and_the_chain_is_untouched(update, reason):
    chain, prompt, model = echo_chain()
    target = ChainTarget(chain)
    before = (prompt.messages[0].prompt.template, list(prompt.input_variables), model.temperature, model.max_tokens)
    # a good value in the same update must not be applied either
    with pytest.raises(InvalidValue, match=reason.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        target.apply({"prompt.human": "Question: {question}", **update})
    assert (
        prompt.messages[0].prompt.template,
        list(prompt.input_variables),
        model.temperature,
        model.max_tokens,
    ) == before
    assert prompt.messages[1].prompt.template == "{question}"
    target.run(QA)
    assert model.calls[-1]["messages"][1]["content"] == "What is 2+2?"


def test_a_variable_the_chain_provides_is_learned_from_a_traced_run():
    """{context} is not in the prompt yet, but the step before it provides it: accepted once seen."""
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    model = EchoChatModel()
    chain = (
        RunnableParallel(question=lambda d: d["question"], context=lambda d: "Paris is in France.")
        | prompt
        | model
        | StrOutputParser()
    )
    target = ChainTarget(chain, include=["prompt.*"])
    with pytest.raises(InvalidValue, match="unknown variable"):
        target.apply({"prompt.human": "{context}\n{question}"})
    target.run({"question": "Where is Paris?"})
    target.apply({"prompt.human": "{context}\n{question}"})
    assert prompt.input_variables == ["context", "question"]
    output, _ = target.run({"question": "Where is Paris?"})
    assert model.calls[-1]["messages"][-1]["content"] == "Paris is in France.\nWhere is Paris?"


def test_tool_code_write_back_and_schema_refresh():
    chain, add, model = tool_loop_chain()
    target = ChainTarget(chain)
    output, graph = target.run("what is 1+2")
    assert graph["add#0"].value["content"] == "-1"
    code = by_name(target.parameters())["tools.add.code"].value
    target.apply({"tools.add.code": code.replace("return a - b", "return a + b")})
    output, graph = target.run("what is 1+2")
    assert graph["add#0"].value["content"] == "3"
    assert by_name(target.parameters())["tools.add.code"].value.count("a + b") == 1
    assert add.invoke({"a": 2, "b": 5}) == 7


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda code: code.replace("b: int)", "b: int, c: int = 0)"), "signature must stay"),
        (lambda code: code.replace("def add", "def plus"), "must keep its name"),
        (lambda code: "import not_a_module_xyz\n" + code, "imports .not_a_module_xyz."),  # the code policy, first
        (lambda code: code.replace("return a - b", "return a +"), "does not parse"),
        (lambda code: "x = 1\n" + code, "only imports, a docstring and one function"),
    ],
)
def test_bad_tool_code_is_rejected(change, reason):
    chain, add, model = tool_loop_chain()
    target = ChainTarget(chain)
    code = by_name(target.parameters())["tools.add.code"].value
    func, schema = add.func, add.args_schema
    with pytest.raises(InvalidValue, match=reason):
        target.apply({"tools.add.code": change(code)})
    assert add.func is func and add.args_schema is schema
    assert add.invoke({"a": 1, "b": 2}) == -1


def test_tool_code_check_compares_the_argument_schema():
    chain, add, model = tool_loop_chain()
    code_param = by_name(parameters_of(chain))["tools.add.code"]
    # same text of the signature, but `int` now names another type: the schema the model sees changes
    shadowed = "from builtins import str as int\n" + code_param.value
    with pytest.raises(InvalidValue, match="argument schema would change"):
        code_param.validate(shadowed)


def test_tool_description_rebinds_the_model():
    chain, add, model = tool_loop_chain()
    target = ChainTarget(chain)
    target.run("what is 1+2")
    assert model.calls[-1]["tools"][0]["function"]["description"] == "Add two numbers."
    target.apply({"tools.add.description": "Add two integers exactly; never subtract."})
    output, graph = target.run("what is 1+2")
    assert model.calls[-1]["tools"][0]["function"]["description"] == "Add two integers exactly; never subtract."
    assert graph["param:tools.add.description"].value == "Add two integers exactly; never subtract."
    # the description is a parent of the model calls that were offered the tool
    assert any(e.id == "param:tools.add.description" for e in graph["ToolCallingFakeModel#0"].edges)


def test_snapshot_and_restore_undo_everything():
    chain, add, model = tool_loop_chain()
    target = ChainTarget(chain)
    snapshot = target.snapshot()
    func, schema = add.func, add.args_schema
    code = by_name(target.parameters())["tools.add.code"].value
    target.apply(
        {"tools.add.code": code.replace("a - b", "a + b"), "tools.add.description": "Adds.", "model.temperature": 1.5}
    )
    assert add.func is not func and model.temperature == 1.5
    target.restore(snapshot)
    assert add.func is func and add.args_schema is schema and add.description == "Add two numbers."
    assert model.temperature == 0.0
    assert {p.name: p.value for p in target.parameters()} == {
        "model.temperature": 0.0,
        "tools.add.code": code,
        "tools.add.description": "Add two numbers.",
    }
    target.run("what is 1+2")
    assert model.calls[-1]["tools"][0]["function"]["description"] == "Add two numbers."


def test_parameters_read_back_edits_made_outside():
    chain, prompt, model = echo_chain()
    target = ChainTarget(chain)
    model.temperature = 0.3
    assert by_name(target.parameters())["model.temperature"].value == 0.3


def test_parameter_nodes_link_to_the_runs_that_used_them():
    chain, prompt, model = echo_chain()
    handler = OptoCallbackHandler(parameters_of(chain), raise_error=True)
    chain.invoke(QA, config={"callbacks": [handler]})
    g = handler.last_graph
    assert {(e.id, e.arg) for e in g["ChatPromptTemplate#0"].edges if e.id.startswith("param:")} == {
        ("param:prompt.system", "template.system"),
        ("param:prompt.human", "template.human"),
    }
    assert {(e.id, e.arg) for e in g["EchoChatModel#0"].edges if e.id.startswith("param:")} == {
        ("param:model.temperature", "temperature"),
        ("param:model.max_tokens", "max_tokens"),
    }
    assert g["param:model.temperature"].param["upper"] == 2.0
    # a handler given only some parameters links only those
    only = OptoCallbackHandler(parameters_of(chain, include=["model.temperature"]), raise_error=True)
    chain.invoke(QA, config={"callbacks": [only]})
    assert [n.id for n in only.last_graph.parameters] == ["param:model.temperature"]


def test_user_parameter_linked_by_run_name():
    app, _, _ = state_graph()
    style = Parameter("agent.style", "text", "terse", meta={"used_by": "agent"})
    target = ChainTarget(app, [*parameters_of(app), style], output_fn=lambda s: s["messages"][-1].content)
    output, graph = target.run({"messages": [("human", "what is 1+2")]})
    assert output == "The sum is 3."
    assert [n.id for n in graph.nodes if any(e.id == "param:agent.style" for e in n.edges)] == ["agent#0", "agent#1"]
    target.apply({"agent.style": "verbose"})
    assert style.value == "verbose"


def test_tool_defined_elsewhere_can_be_passed_explicitly():
    add = make_add_tool()
    params = by_name(parameters_of([add]))
    assert set(params) == {"tools.add.code", "tools.add.description"}
