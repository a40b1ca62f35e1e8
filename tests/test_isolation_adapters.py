"""Every adapter's target runs in isolated workers and gives what it gives in this process.

The demo workflow of each adapter (real LangChain chain and tool, real DSPy program, real AutoGen
team; only the models are fake, the frameworks' own fakes) is evaluated in this process, in a
forked worker (``isolation="process"``: the target itself, nothing pickled) and in the sandbox
(fresh interpreters in bubblewrap, built by a ``target_factory``). Outputs and feedback must match.
"""

from __future__ import annotations

import pytest

from opto_core.app.demo import load_recipe
from opto_core.engine.executors import ThreadExecutor
from opto_core.engine.executors.process import ProcessExecutor
from opto_core.engine.sandbox import Sandbox

RECIPES = {
    "python": "opto_core.app.demo:build_python_demo",
    "langchain": "opto_adapters.langchain.demo:build_demo",
    "dspy": "opto_adapters.dspy.demo:build_demo",
    "autogen": "opto_adapters.autogen.demo:build_demo",
}


def build_python():
    return load_recipe(RECIPES["python"])[0]


def build_langchain():
    return load_recipe(RECIPES["langchain"])[0]


def build_dspy():
    return load_recipe(RECIPES["dspy"])[0]


def build_autogen():
    return load_recipe(RECIPES["autogen"])[0]


FACTORIES = {"python": build_python, "langchain": build_langchain, "dspy": build_dspy, "autogen": build_autogen}


def _evaluate(executor, target, trainset, feedback_fn):
    values = {p.name: p.value for p in target.parameters() if p.trainable}
    try:
        return executor.evaluate(target, trainset[:2], feedback_fn, indices=[0, 1], failure_score=0.0, values=values)
    finally:
        executor.close()


def _seen(evaluations):
    return [(str(e.output), e.feedback.score, e.failed, [n.kind for n in e.graph.nodes]) for e in evaluations]


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_adapter_target_runs_in_a_forked_worker_as_it_runs_here(name, tmp_path, monkeypatch):
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path))
    target, trainset, feedback_fn, _ = load_recipe(RECIPES[name])
    here = _evaluate(ThreadExecutor(1), target, trainset, feedback_fn)
    isolated = _evaluate(ProcessExecutor(1), target, trainset, feedback_fn)
    assert _seen(isolated) == _seen(here)
    assert all(e.worker.startswith("pid ") for e in isolated)


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_adapter_target_runs_in_the_sandbox_built_by_its_factory(name, tmp_path, monkeypatch):
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path))
    target, trainset, feedback_fn, _ = load_recipe(RECIPES[name])
    here = _evaluate(ThreadExecutor(1), target, trainset, feedback_fn)
    boxed = ProcessExecutor(1, target_factory=FACTORIES[name], sandbox=Sandbox())
    boxed.start(target)
    assert _seen(_evaluate(boxed, target, trainset, feedback_fn)) == _seen(here)
