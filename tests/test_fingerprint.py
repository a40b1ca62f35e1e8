"""A changed workflow is noticed: resuming a run directory refuses when the parameters differ from the run's start."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opto_core import Feedback, Parameter
from opto_core.engine.fingerprint import WorkflowChanged
from opto_core.engine.loop import optimize
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


@op
def times(x: float, k: float) -> float:
    """Multiply x by k."""
    return x * k


def build(version: int = 1, rate: float = 0.5, extra: list | None = None):
    """A calculator workflow; version 2 is the same workflow after its author edited the tool's body."""
    if version == 1:

        @op(trainable=True, parameter_name="calc.tools.add.code")
        def add(a: float, b: float) -> float:
            """Add two numbers."""
            return a + b
    else:

        @op(trainable=True, parameter_name="calc.tools.add.code")
        def add(a: float, b: float) -> float:
            """Add two numbers."""
            return round(a + b, 2)

    scale = Parameter("calc.scale", "float", rate, lower=0.0, upper=2.0)
    return FunctionTarget(lambda a, b: times(add(a, b), scale), [add, scale, *(extra or [])])  # type: ignore[list-item]


DATA = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]


def feedback(example, output):
    want = example["a"] + example["b"]
    return Feedback(1.0 if output == want else 0.0, f"expected {want}, got {output}")


def step(**settings):
    llm = ScriptedLLM([json.dumps({"reasoning": "scale 1", "suggestion": {"calc.scale": 1.0}})], repeat_last=True)

    def run(target):
        return optimize(target, DATA, feedback, OptoPrime(target.parameters(), llm), batch_size=2, **settings)

    return run


def test_an_edited_tool_body_is_refused_with_the_diff_named_and_both_ways_out(tmp_path):
    run_dir = str(tmp_path / "run")
    first = step(max_steps=1, run_dir=run_dir)(build(1))
    assert first.best_values["calc.scale"] == 1.0
    with pytest.raises(WorkflowChanged) as refused:
        step(max_steps=2, run_dir=run_dir)(build(2))
    message = str(refused.value)
    assert "tool body of calc.tools.add.code changed" in message
    assert "fresh=True" in message and "resume_changed=True" in message
    history = (tmp_path / "run" / "history.jsonl").read_text()
    assert len(history.splitlines()) == 2  # refusing touched nothing

    anyway = step(max_steps=2, run_dir=run_dir, resume_changed=True)(build(2))
    assert anyway.steps == 2 and anyway.history[0] == first.history[0]  # continued the saved run
    again = step(max_steps=3, run_dir=run_dir)(build(2))  # the changed workflow is now the run's own
    assert again.steps == 3

    fresh = step(max_steps=1, run_dir=run_dir, fresh=True)(build(1))
    assert fresh.steps == 1 and len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 2


def test_the_same_workflow_resumes_whether_rebuilt_or_still_holding_the_run_s_values(tmp_path):
    run_dir = str(tmp_path / "run")
    target = build(1)
    step(max_steps=1, run_dir=run_dir)(target)
    assert step(max_steps=2, run_dir=run_dir)(target).steps == 2  # holds the best values: not an edit
    assert step(max_steps=3, run_dir=run_dir)(build(1)).steps == 3  # rebuilt from the same code


def test_a_new_parameter_a_changed_initial_value_and_a_changed_kind_are_named(tmp_path):
    run_dir = str(tmp_path / "run")
    step(max_steps=1, run_dir=run_dir)(build(1, rate=0.5))
    with pytest.raises(WorkflowChanged, match=r"initial value of calc.scale changed \('0.5' -> '0.7'\)"):
        step(max_steps=2, run_dir=run_dir)(build(1, rate=0.7))
    with pytest.raises(WorkflowChanged, match="parameter 'calc.tone' is new"):
        step(max_steps=2, run_dir=run_dir)(build(1, extra=[Parameter("calc.tone", "text", "friendly")]))
    with pytest.raises(WorkflowChanged, match="kind of calc.scale changed from float to int"):
        step(max_steps=2, run_dir=run_dir)(_int_scale())


def _int_scale():
    """The calculator after its author made the scale a whole number."""
    target = build(1)
    scale = Parameter("calc.scale", "int", 1, lower=0, upper=2)
    add = next(p for p in target.parameters() if p.name == "calc.tools.add.code")
    return FunctionTarget(lambda a, b: a + b, [add, scale])


def test_opto_resume_refuses_a_changed_demo_and_starts_over_with_fresh(tmp_path, monkeypatch):
    from opto_core.app import cli
    from opto_core.app import demo as demos

    llm = ScriptedLLM([json.dumps({"reasoning": "none", "suggestion": {}})], repeat_last=True)
    llm.base_url = "http://127.0.0.1:9/v1"
    monkeypatch.setattr(cli, "_client", lambda *args, **kwargs: llm)
    run_dir = tmp_path / "demo"
    assert (
        CliRunner()
        .invoke(cli.app, ["demo", "--workflow", "python", "--steps", "1", "--run-dir", str(run_dir)])
        .exit_code
        == 0
    )
    original = demos.build_python_demo

    def edited():
        target, train, feedback_fn, val = original()
        demos.DISCOUNT.value = 0.4  # the author changed the workflow's starting rate
        return target, train, feedback_fn, val

    monkeypatch.setattr(demos, "build_python_demo", edited)
    refused = CliRunner().invoke(cli.app, ["resume", str(run_dir), "--steps", "2"])
    assert refused.exit_code == 2
    assert "initial value of invoice.discount_rate changed ('0.5' -> '0.4')" in " ".join(refused.output.split())
    assert "--fresh" in refused.output
    fresh = CliRunner().invoke(cli.app, ["resume", str(run_dir), "--steps", "1", "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    config = json.loads((run_dir / "config.json").read_text())
    scale = next(e for e in config["fingerprint"]["parameters"] if e["name"] == "invoice.discount_rate")
    assert scale["preview"] == "0.4"
