"""The LangChain internals the adapter uses (`opto_adapters.langchain._compat`), checked against the installed
LangChain: each test fails when a release changes one of them."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.base import BaseTracer
from packaging.specifiers import SpecifierSet

from opto_adapters.langchain import _compat

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
        1, config={"callbacks": [keeper]})
    (step,) = [r for r in keeper.runs if r.name == "step"]
    assert seen == [step.id]
    assert _compat.current_parent_run() is None  # outside any runnable
