"""Fixtures for the DSPy adapter tests: real DSPy programs, a rule-based task LM (DSPy's custom
engine, so only the model is fake), and no disk cache."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))  # before dspy is imported

import importlib.util

import pytest

_spec = importlib.util.find_spec("dspy")
if _spec is None or _spec.origin is None:  # not installed (this directory itself looks like a namespace package)
    collect_ignore_glob = ["test_dspy_*.py"]
else:
    import dspy
    from dspy_programs import CotThenPredict, TwoSame, agent_policy, echo_policy, to_fahrenheit

    from opto_adapters.dspy.testing import rule_lm


@pytest.fixture
def echo_lm():
    return rule_lm(echo_policy)


@pytest.fixture
def agent_lm():
    return rule_lm(agent_policy)


@pytest.fixture
def two_same():
    return TwoSame()


@pytest.fixture
def cot_then_predict():
    return CotThenPredict()


@pytest.fixture
def make_agent():
    def make(tool=to_fahrenheit, max_iters=3):
        return dspy.ReAct("question -> answer", tools=[tool], max_iters=max_iters)

    return make
