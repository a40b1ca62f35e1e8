"""The comparison runner with scripted models: a row for every optimizer, and the budget kept exactly.

The task model and the optimizers' model are `bench.tasks.scripted` stand-ins (rule-based
`ScriptedLLM`s); DSPy's optimizers reach theirs through the same DSPy custom engine that real
runs use. trace-opt rows run when trace-opt is installed, DSPy rows when DSPy is.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` lives at the repository root and is not an installed package
    sys.path.insert(0, str(ROOT))

from bench import compare  # noqa: E402
from bench.tasks import get_task, scripted  # noqa: E402
from bench.tasks.models import BudgetedChat, BudgetExhausted  # noqa: E402
from opto_core.testing import ScriptedLLM  # noqa: E402

HAS_DSPY = importlib.util.find_spec("dspy") is not None
HAS_TRACE = importlib.util.find_spec("opto") is not None
TASKS = ["boolean_expressions", "numeric", "workflow_python"]


def _models(settings: compare.Settings):
    answers = {}
    for name in TASKS:
        task = get_task(name).make(seed=settings.seed, quick=settings.quick)
        answers.update(scripted.answers_of(task.trainset, task.valset, task.testset))
    task_model = scripted.task_model(answers)
    hidden = get_task("numeric").make(seed=settings.seed, quick=settings.quick).info["hidden"]
    # suggestions under the names our optimizers see, so that steps really apply values (for numeric:
    # the hidden values, which zero the error, so the step must be kept)
    optimizer_model = scripted.optimizer_model(
        {"boolean_expressions.prompt_template": "Question: {}\nAnswer:", "cashier.temperature": 0.0, **hidden}
    )
    return task_model, optimizer_model


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    settings = compare.Settings(budget_calls=3, quick=True, batch_size=2)
    task_model, optimizer_model = _models(settings)
    rows = compare.run_comparison(TASKS, list(compare.OPTIMIZERS), task_model, optimizer_model, settings)
    return rows, settings, optimizer_model, tmp_path_factory.mktemp("out")


def test_every_applicable_optimizer_has_a_row(table):
    rows, _, _, _ = table
    got = {(r["task"], r["optimizer"]) for r in rows}
    expected = {(t, o) for t in TASKS for o in compare.OPTIMIZERS if o not in compare.DSPY}
    expected |= {("boolean_expressions", o) for o in compare.DSPY}  # only BBH tasks have a DSPy program
    assert got == expected
    search_only = ("tpe", "gp", "pso", "cmaes", "random")
    for row in rows:
        if row["optimizer"] == "trace" and not HAS_TRACE or row["optimizer"] in compare.DSPY and not HAS_DSPY:
            assert row["status"] == "not available" and row["reason"]
            continue
        if row["optimizer"] in search_only and row["task"] == "boolean_expressions":  # a prompt: nothing to search
            assert row["status"] == "not available" and "nothing to search" in row["reason"]
            continue
        if row["optimizer"] == "opto-dspy" and row["status"] == "not available":
            continue  # the DSPy adapter is optional for this harness
        assert row["status"] == "ok", (row["task"], row["optimizer"], row["reason"], row["details"].get("traceback"))
        assert row["before"] is not None and row["after"] is not None and row["seconds"] is not None


def test_the_budget_is_respected_exactly(table):
    rows, settings, optimizer_model, _ = table
    for row in rows:
        assert row["calls"] <= settings.budget_calls
        if row["status"] != "ok":
            continue
        if row["optimizer"] in ("opto", "opto-notrace", "opro", "trace", "opto-dspy"):
            assert row["calls"] == settings.budget_calls, row  # these spend the whole budget, and no more
            assert row["stopped_reason"] in ("max_llm_calls", "budget")
        if row["optimizer"] == "copro":
            assert row["calls"] == row["details"]["planned_calls"]
        assert row["tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        assert (row["tokens"] > 0) == (row["calls"] > 0), row  # search-only rows call no LLM
    assert len(optimizer_model.requests) == sum(r["calls"] for r in rows)  # every call was counted once
    temperatures = {req["temperature"] for req in optimizer_model.requests}
    assert temperatures == {settings.temperature}  # the same temperature for every optimizer


def test_ours_really_optimizes_with_the_scripted_suggestions(table):
    rows, _, _, _ = table
    numeric = next(r for r in rows if r["task"] == "numeric" and r["optimizer"] == "opto")
    assert numeric["details"]["kept_steps"] >= 1  # the suggested values were applied and kept
    assert numeric["before"] > 0.1 and numeric["after"] == pytest.approx(0.0, abs=1e-6)


def test_table_json_and_plot_are_written(table):
    rows, _, _, out = table
    text = compare.format_table(rows)
    assert "boolean_expressions" in text and "opto-notrace" in text and "before" in text
    written = compare.write_outputs(rows, out, {"command": "python -m bench.compare --quick", "date": "now"})
    data = json.loads(Path(written["json"]).read_text())
    assert len(data["rows"]) == len(rows) and data["meta"]["command"].startswith("python -m bench.compare")
    assert Path(written["plot"]).exists() and Path(written["plot"]).stat().st_size > 500
    assert "| task |" in Path(written["markdown"]).read_text()


def test_budget_cap_refuses_the_call_past_the_budget():
    chat = BudgetedChat(ScriptedLLM(["a"], repeat_last=True), max_calls=2, temperature=0.3, force_temperature=True)
    chat.chat([{"role": "user", "content": "x"}], temperature=1.5)
    chat.chat([{"role": "user", "content": "y"}])
    with pytest.raises(BudgetExhausted):
        chat.chat([{"role": "user", "content": "z"}])
    assert chat.usage.calls == 2 and chat.refused == 1
    assert [r["temperature"] for r in chat.inner.requests] == [0.3, 0.3]


def test_budget_plans_for_dspy_optimizers():
    assert compare.copro_plan(10, 1) == (5, 2, 9)  # 4 first candidates, then 5 at the second depth
    assert compare.copro_plan(29, 1) == (10, 3, 29)  # DSPy's defaults fit exactly
    breadth, depth, planned = compare.copro_plan(7, 2)
    assert planned <= 7 and breadth >= 2 and depth >= 1
    with pytest.raises(compare.NotAvailable):
        compare.copro_plan(1, 2)
    light = compare.mipro_plan(20, 1, 6)
    assert light["auto"] == "light" and light["planned"] == 2 + 6 * 3  # summary, then 3 calls per candidate
    assert compare.mipro_plan(19, 1, 6)["auto"] is None
    small = compare.mipro_plan(5, 1, 6)
    assert small["auto"] is None and small["planned"] <= 5 and small["candidates"] >= 2
    with pytest.raises(compare.NotAvailable):
        compare.mipro_plan(3, 2, 6)


def test_cli_help_lists_the_public_flags(capsys):
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--tasks",
        "--optimizers",
        "--base-url",
        "--model",
        "--budget-calls",
        "--quick",
        "--json",
        "--seed",
        "--out",
    ):
        assert flag in text


def test_cli_json_prints_one_object_per_row(monkeypatch, capsys, tmp_path):
    import opto_core.llm.client

    settings = compare.Settings(budget_calls=2, quick=True)
    task_model, optimizer_model = _models(settings)
    made = iter([task_model, optimizer_model])
    monkeypatch.setattr(opto_core.llm.client, "OpenAIChat", lambda **kwargs: next(made))
    code = compare.main(
        [
            "--tasks",
            "numeric",
            "--optimizers",
            "opto,opro",
            "--budget-calls",
            "2",
            "--quick",
            "--json",
            "--out",
            str(tmp_path),
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines]
    assert code == 0 and [(r["task"], r["optimizer"]) for r in rows] == [("numeric", "opto"), ("numeric", "opro")]
    assert all(r["calls"] == 2 for r in rows)
    assert (tmp_path / "results.json").exists()


def test_unknown_names_are_clear_errors():
    with pytest.raises(SystemExit, match="unknown optimizers"):
        compare.main(["--optimizers", "opto,sgd", "--tasks", "numeric"])
    with pytest.raises(SystemExit, match="unknown task"):
        compare.main(["--tasks", "nope"])


def test_framework_workflow_rows_run_through_our_adapters():
    settings = compare.Settings(budget_calls=1, quick=True, batch_size=2)
    optimizer_model = scripted.optimizer_model({})
    tasks = ["workflow_langchain", "workflow_dspy", "workflow_autogen"]
    rows = compare.run_comparison(tasks, ["opto"], ScriptedLLM(["unused"]), optimizer_model, settings)
    assert [r["task"] for r in rows] == tasks
    for row in rows:
        if row["status"] == "not available":  # the framework or its adapter is not installed
            assert row["reason"]
            continue
        assert row["status"] == "ok", (row["task"], row["reason"], row["details"].get("traceback"))
        assert row["version"] == row["task"].split("_")[1] and row["calls"] == 1
        assert row["before"] == 0.0  # the planted faults break every answer
    # the optimizer saw each framework's trace: the faulty tool line is in its prompt
    assert all("total += float(price)" in r["messages"][-1]["content"] for r in optimizer_model.requests)


def test_info_cost_rows_say_what_each_prompt_holds():
    from bench import info_cost

    rows = info_cost.measure(budgets=(8000,), include_trace=HAS_TRACE)
    python = next(r for r in rows if r["system"] == "ours / plain Python")
    assert python["status"] == "ok" and python["complete"] and python["tokens"] > 200
    for row in rows:
        if row["status"] == "ok":
            assert set(info_cost.CHECKS) <= set(row) and row["tokens"] > 0
    if HAS_TRACE:
        trace = next(r for r in rows if r["system"].startswith("Trace"))
        assert trace["status"] == "ok" and trace["var_tool"] and trace["exception"]
    # the checks are not vacuous: a prompt without the trace misses the values and the exception
    examples = info_cost.minibatch()
    found = info_cost.check("#Variables\n(float) temperature=1.3\n#Feedback\nwrong", examples)
    assert found["var_temperature"] and not found["var_tool"] and not found["exception"]
    assert not found["wrong_subtotal"] and not found["feedback"]


@pytest.mark.skipif(not HAS_DSPY, reason="dspy is not installed")
def test_a_dspy_optimizer_that_needs_more_calls_is_stopped_at_the_cap():
    # replies that never parse: DSPy's ChatAdapter retries each with JSONAdapter, a call COPRO's plan
    # does not count; the cap refuses it and the row says the optimizer ran out of budget
    settings = compare.Settings(budget_calls=4, quick=True)
    task_model, _ = _models(settings)
    garbage = ScriptedLLM(["this reply has no fields at all"], repeat_last=True)
    [row] = compare.run_comparison(["boolean_expressions"], ["copro"], task_model, garbage, settings)
    assert row["status"] == "ran out of budget" and "JSONAdapter" in row["reason"]
    assert row["calls"] == 4 and row["refused_calls"] >= 1 and len(garbage.requests) == 4


class _BrokenEndpoint:
    """An optimizer model whose every call fails the way a refused request does."""

    model = "broken"

    def chat(self, messages, **kwargs):
        raise RuntimeError("HTTP 400: request (4173 tokens) exceeds the available context size (4096 tokens)")


def test_a_run_that_stopped_on_an_optimizer_error_is_marked_stopped():
    settings = compare.Settings(budget_calls=3, quick=True, batch_size=2)
    task_model, _ = _models(settings)
    rows = compare.run_comparison(["numeric"], ["opto", "opro"], task_model, _BrokenEndpoint(), settings)
    for row in rows:
        assert row["status"] == "stopped" and row["stopped_reason"] == "optimizer_error", row
        assert "exceeds the available context size" in row["reason"] and "never proposed anything" in row["reason"]
        assert row["proposals"] == 0
    text = compare.format_table(rows)
    assert "stopped" in text and "optimizer_error" in text and "never proposed anything" in text


def test_a_finished_run_is_ok_and_counts_its_proposals(table):
    rows, _, _, _ = table
    numeric = next(r for r in rows if r["task"] == "numeric" and r["optimizer"] == "opto")
    assert numeric["status"] == "ok" and numeric["stopped_reason"] in compare.FINISHED and numeric["proposals"] >= 1


# ----- search optimizers, budgets of runs, seeds, and a peer that raises -----------------------------------
class _Raising:
    """A test optimizer that raises in its step, as GEPA's AdapterParseError did (the optimizer protocol only)."""

    def __init__(self, parameters):
        self.params = {p.name: p for p in parameters}

    def set_parameters(self, parameters):
        self.params = {p.name: p for p in parameters}

    def observe(self, values, score):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def step(self, instances, *, max_calls=None):
        raise RuntimeError("the reflection reply did not parse")


def test_the_table_goes_on_when_one_optimizer_raises(monkeypatch, tmp_path):
    real = compare._make_ours

    def make(optimizer, parameters, chat, settings):
        if optimizer == "pso":
            raise KeyError("boom outside the loop")  # escapes the loop: must still become a row
        return _Raising(parameters) if optimizer == "tpe" else real(optimizer, parameters, chat, settings)

    monkeypatch.setattr(compare, "_make_ours", make)
    settings = compare.Settings(budget_evals=30, seeds=2, quick=True, batch_size=2)  # 6 runs to start, 8 a step
    rows = compare.run_comparison(["numeric"], ["tpe", "pso", "random"], ScriptedLLM([]), ScriptedLLM([]), settings)
    by = {(r["optimizer"], r["seed"]): r for r in rows}
    assert set(by) == {(o, s) for o in ("tpe", "pso", "random") for s in (0, 1)}
    assert by[("tpe", 0)]["status"] != "ok" and "did not parse" in by[("tpe", 0)]["reason"]
    assert by[("pso", 1)]["status"] == "error" and "boom" in by[("pso", 1)]["reason"]
    for seed in (0, 1):
        row = by[("random", seed)]
        assert row["status"] == "ok" and row["calls"] == 0
        assert 14 <= len(row["curve"]) <= 30 and row["convergence"]["best@50"] == row["curve"][-1]
        assert row["curve"] == sorted(row["curve"], reverse=True)  # best error so far never grows
    assert by[("random", 0)]["curve"] != by[("random", 1)]["curve"]  # another seed, another task and search
    written = compare.write_outputs(rows, tmp_path, {"command": "test"})
    assert Path(written["convergence"]).exists() and "Convergence" in Path(written["markdown"]).read_text()


def test_budget_evals_and_seeds_flags():
    args = compare.build_parser().parse_args(["--budget-evals", "50", "--seeds", "3", "--optimizers", "hybrid,tpe"])
    assert args.budget_evals == 50 and args.seeds == 3
    for name in ("hybrid", "tpe", "gp", "pso", "cmaes", "random"):
        assert name in compare.OPTIMIZERS and name in compare.BUDGET_NOTES
    assert compare.resolve_tasks("traffic,traffic_controller", False) == ["traffic", "traffic_controller"]
