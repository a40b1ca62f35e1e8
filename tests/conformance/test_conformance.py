"""The conformance suite (`opto_core.testing.conformance`) for the five tracers: plain Python, LangChain,
DSPy, AutoGen AgentChat and classic AutoGen (AG2), each with its own small real program (``programs.py``)
and a scripted model server on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import programs as P
import pytest

from opto_core import coverage
from opto_core.testing import CHECKS, AdapterCase

HERE = str(Path(__file__).resolve().parent)
ROOT = str(Path(__file__).resolve().parents[2])
#: The fresh process finds this worktree first, and DSPy keeps its cache out of the home directory.
ENV = {
    "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]),
    "DSPY_CACHEDIR": os.environ.get("DSPY_CACHEDIR") or tempfile.mkdtemp(prefix="dspy-cache-"),
}


def _case(name: str) -> AdapterCase:
    case = _program(name)
    case.coverage = coverage
    return case


def _program(name: str) -> AdapterCase:
    if name == "python":
        return AdapterCase(
            "python",
            "python",
            P.plain_program,
            P.plain_target,
            P.plain_bound,
            P.plain_apply_values,
            P.plain_native,
            {"question": "What is two plus two?"},
            {"system": "Answer in two words.", "temperature": 0.5},
            factory="programs:plain_program",
            bound_path="programs:plain_bound",
            apply_path="programs:plain_apply_values",
            path=HERE,
            env=ENV,
        )
    if name == "langchain":
        from opto_adapters.langchain import ChainTarget, apply_values, bound_parameters

        return AdapterCase(
            "langchain",
            "langchain-core",
            P.langchain_program,
            ChainTarget,
            bound_parameters,
            apply_values,
            P.langchain_native,
            {"question": "What is two plus two?"},
            {"prompt.system": "Answer in two words.", "model.temperature": 0.5},
            factory="programs:langchain_program",
            bound_path="opto_adapters.langchain:bound_parameters",
            apply_path="opto_adapters.langchain:apply_values",
            path=HERE,
            env=ENV,
        )
    if name == "dspy":
        from opto_adapters.dspy import apply_values, bound_parameters

        return AdapterCase(
            "dspy",
            "dspy",
            P.dspy_program,
            P.dspy_target,
            bound_parameters,
            apply_values,
            P.dspy_native,
            {"question": "What is two plus two?"},
            {"predict.instructions": "Answer in two words.", "predict.lm.temperature": 0.5},
            factory="programs:dspy_program",
            bound_path="opto_adapters.dspy:bound_parameters",
            apply_path="opto_adapters.dspy:apply_values",
            path=HERE,
            reply=P.dspy_reply,
            output_of=P.dspy_output,
            env=ENV,
        )
    if name == "agentchat":
        from opto_adapters.autogen import apply_values, bound_parameters

        return AdapterCase(
            "agentchat",
            "autogen-agentchat",
            P.agentchat_program,
            P.agentchat_target,
            bound_parameters,
            apply_values,
            P.agentchat_native,
            {"task": "What is two plus two?"},
            {
                "bot.system_message": "Answer in two words.",
                "bot.tools.add.description": "Adds two ints.",
                "bot.temperature": 0.5,
            },
            factory="programs:agentchat_program",
            bound_path="opto_adapters.autogen:bound_parameters",
            apply_path="opto_adapters.autogen:apply_values",
            path=HERE,
            reply=P.agentchat_reply,
            env=ENV,
        )
    if name == "ag2":
        from opto_adapters.autogen.ag2 import apply_values

        return AdapterCase(
            "ag2",
            "autogen",
            P.ag2_program,
            P.ag2_target,
            P.ag2_bound,
            P.ag2_apply_values,
            P.ag2_native,
            {"task": "What is two plus two?"},
            {"assistant.system_message": "Answer in two words.", "assistant.temperature": 0.5},
            factory="programs:ag2_program",
            bound_path="programs:ag2_bound",
            apply_path="programs:ag2_apply_values",
            path=HERE,
            env=ENV,
        )
    raise ValueError(name)


ADAPTERS = ["python", "langchain", "dspy", "agentchat", "ag2"]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_conformance(adapter, check):
    check(_case(adapter))


def test_the_coverage_check_names_an_unreached_parameter_and_accepts_a_stated_reason():
    from opto_core import Parameter
    from opto_core.testing.conformance import every_parameter_is_reached

    def with_unused(base_url):
        program = P.plain_program(base_url)
        program.parameters.append(Parameter("signature", "text", "Kind regards.", description="never sent"))
        return program

    case = _case("python")
    case.make = with_unused
    with pytest.raises(AssertionError, match=r"does not reach \['signature'\]"):
        every_parameter_is_reached(case)
    case.unreached = {"signature": "the small program never signs its answers"}
    every_parameter_is_reached(case)
    case.unreached = {"signature": "unused", "system": "a stale exemption"}
    with pytest.raises(AssertionError, match=r"listed as unreached but reached .*'system'"):
        every_parameter_is_reached(case)
    case.coverage = None
    with pytest.raises(AssertionError, match=r"coverage=opto_core.coverage"):
        every_parameter_is_reached(case)
