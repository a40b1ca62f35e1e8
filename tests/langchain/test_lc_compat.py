"""The LangChain internals the adapter uses (`opto_adapters.langchain._compat`), checked against the installed
LangChain: each test fails when a release changes one of them."""

from __future__ import annotations

import warnings
from importlib.metadata import version
from pathlib import Path

from langchain.agents import create_agent
from langchain.agents.middleware import dynamic_prompt
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.base import BaseTracer
from packaging.specifiers import SpecifierSet

from opto_adapters.langchain import _compat, parameters_of
from opto_adapters.langchain.testing import EchoChatModel

ROOT = Path(__file__).resolve().parents[2]


class Keeper(BaseTracer):
    """A tracer that keeps every finished run (LangChain's run tree)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runs = []

    def _persist_run(self, run):
        pass

    def _on_run_create(self, run):
        self.runs.append(run)


def test_the_installed_langchain_core_is_in_the_tested_range_and_the_extra_pins_it():
    assert version("langchain-core") in SpecifierSet(_compat.TESTED_RANGE)
    assert f'"langchain-core{_compat.TESTED_RANGE}"' in (ROOT / "pyproject.toml").read_text()


def test_the_chat_schema_keeps_a_chat_models_input_as_messages():
    messages = [SystemMessage("Be brief."), HumanMessage("Hi")]
    kept, default = Keeper(**_compat.CHAT_MESSAGES_SCHEMA), Keeper()
    FakeListChatModel(responses=["ok"]).invoke(messages, config={"callbacks": [kept, default]})
    run_inputs = kept.runs[0].inputs
    assert [m["kwargs"]["content"] for m in run_inputs["messages"][0]] == ["Be brief.", "Hi"]  # one per message
    assert "prompts" in default.runs[0].inputs and "messages" not in default.runs[0].inputs  # else one string


def test_the_current_parent_run_is_the_runnable_being_executed():
    seen = []
    keeper = Keeper()
    RunnableLambda(lambda x: seen.append(_compat.current_parent_run()) or x, name="step").invoke(
        1, config={"callbacks": [keeper]}
    )
    (step,) = [r for r in keeper.runs if r.name == "step"]
    assert seen == [step.id]
    assert _compat.current_parent_run() is None  # outside any runnable


def test_create_agent_keeps_its_system_prompt_in_the_model_nodes_closure():
    agent = create_agent(EchoChatModel(), [], system_prompt="Be kind.")
    node = agent.nodes["model"].bound
    cell = _compat.agent_prompt_cell(node.func)
    assert cell is not None and cell.cell_contents == SystemMessage("Be kind.")
    assert _compat.agent_prompt_cell(node.afunc) is cell  # sync and async share one cell
    cell.cell_contents = SystemMessage("Be terse.")  # what a write does: the next request carries it
    model = EchoChatModel()
    agent = create_agent(model, [], system_prompt="Be kind.")
    _compat.agent_prompt_cell(agent.nodes["model"].bound.func).cell_contents = SystemMessage("Be terse.")
    agent.invoke({"messages": [HumanMessage("hi")]})
    assert model.calls[-1]["messages"][0] == {"type": "system", "content": "Be terse."}
    assert _compat.agent_prompt_cell(create_agent(EchoChatModel(), []).nodes["model"].bound.func) is None  # no prompt
    assert _compat.agent_prompt_cell(lambda: None) is None


def test_create_react_agent_keeps_its_prompt_in_the_prompt_steps_closure():
    from langgraph.prebuilt import create_react_agent

    for prompt in ("Be terse.", SystemMessage("Be terse.")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = EchoChatModel()
            agent = create_react_agent(model, [], prompt=prompt)
        cells = [_compat.react_prompt_cell(f) for f in _functions_in(agent)]
        (cell,) = [c for c in cells if c is not None]
        assert cell.cell_contents == SystemMessage("Be terse.")
        cell.cell_contents = SystemMessage("Be kind.")
        agent.invoke({"messages": [HumanMessage("hi")]})
        assert model.calls[-1]["messages"][0] == {"type": "system", "content": "Be kind."}
        assert parameters_of(agent)  # discovery reads it through the same accessor


def test_dynamic_prompt_keeps_your_function_in_its_wrappers_closure():
    def raw(request) -> str:
        return "Be terse."

    middleware = dynamic_prompt(raw)
    assert _compat.dynamic_prompt_function(type(middleware).wrap_model_call) is raw
    assert _compat.dynamic_prompt_function(type(middleware).awrap_model_call) is raw
    assert _compat.dynamic_prompt_function(raw) is None


def _functions_in(graph):
    """Every plain function behind a compiled graph's nodes, and the runnables their closures hold
    (``create_react_agent``'s model node closes over ``prompt | model``)."""
    found, stack, seen = [], [node.bound for node in graph.nodes.values()], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for name in ("func", "afunc"):
            function = getattr(obj, name, None)
            if callable(function):
                found.append(function)
                stack.extend(cell.cell_contents for cell in getattr(function, "__closure__", None) or ())
        stack.extend(getattr(obj, "steps", None) or [])
        bound = getattr(obj, "bound", None)
        if bound is not None:
            stack.append(bound)
    return found
