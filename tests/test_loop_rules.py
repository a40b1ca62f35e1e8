"""The loop's rules: one Settings, failed evaluations never progress, exact evaluation budget, keep rule,
re-validation after runs, finished runs, observe replay on resume, and saving the values."""

import json
import logging

import pytest
from scale_scenario import TRAIN, Recording, feedback, make, say, scale

from opto_core import Parameter
from opto_core.engine.loop import optimize
from opto_core.engine.settings import Settings
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.values import load_values
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


def test_optimize_takes_one_settings_object_and_rejects_unknown_names():
    target, k = make()
    llm = ScriptedLLM([say(3.0)])
    result = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), settings=Settings(max_steps=1, batch_size=2)
    )
    assert result.best_values == {"k": 3.0}
    with pytest.raises(TypeError, match="unknown setting.*max_stepz.*max_steps"):
        optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_stepz=1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Settings(batch_size=0)


def test_a_step_judged_on_infrastructure_failures_is_never_kept(caplog):
    param = Parameter("k", "float", 1.0, lower=-100, upper=100)
    calls = {"n": 0}

    def workflow(x):
        calls["n"] += 1
        if param.value == 3.0:  # the check runs of the new value hit a dead connection
            raise ConnectionError("connection reset by peer")
        return scale(x, param)

    target = FunctionTarget(workflow, [param])
    caplog.set_level(logging.ERROR, logger="opto")
    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(3.0), say(3.0)])),
        max_steps=2,
        batch_size=2,
    )
    steps = result.history[1:]
    assert [r["kept"] for r in steps] == [False, False] and param.value == 1.0
    assert all("failed outside the workflow" in r["decision"] for r in steps)
    assert steps[0]["check_infrastructure_errors"][0]["error"].startswith("ConnectionError")
    assert steps[1]["errors_total"] == 4
    reports = [r for r in caplog.records if "outside the workflow" in r.getMessage()]
    assert len(reports) == 1  # one cause, reported once


def test_the_evaluation_budget_is_exact():
    target, k = make()
    runs = {"n": 0}
    original = target.run

    def counting_run(example):
        runs["n"] += 1
        return original(example)

    target.run = counting_run
    llm = ScriptedLLM([say(2.0), say(2.5), say(3.0)], repeat_last=True)
    result = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=10, batch_size=2, max_evaluations=11
    )
    # initial 4, then 4 per step (batch 2 + check 2): a third step would need 12 + 4 > 11
    assert result.stopped_reason == "max_evaluations" and result.evaluations == runs["n"] == 4 + 4
    assert result.evaluations <= 11


def test_reused_evaluations_make_a_one_example_task_cost_one_run_per_step():
    target, k = make()
    runs = {"n": 0}
    original = target.run
    target.run = lambda example: (runs.__setitem__("n", runs["n"] + 1), original(example))[1]
    llm = ScriptedLLM([say(2.0), say(3.0), say(2.5)])
    result = optimize(
        target,
        TRAIN[:1],
        feedback,
        OptoPrime(target.parameters(), llm),
        max_steps=3,
        batch_size=1,
        reuse_evaluations=True,
    )
    assert runs["n"] == result.evaluations == 1 + 3
    assert [r["kept"] for r in result.history[1:]] == [True, True, False] and k.value == 3.0


def test_the_keep_rule_is_written_in_each_step():
    k = Parameter("k", "float", 3.0, lower=-100, upper=100)
    weights = Parameter("w", "float", 1.0, lower=0, upper=2)
    target = FunctionTarget(lambda x: scale(x, k), [k, weights])
    llm = ScriptedLLM([json.dumps({"reasoning": "w does nothing", "suggestion": {"w": 1.5}})] * 2)
    kept = optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=1, batch_size=2)
    assert kept.history[1]["kept"] and "not worse (keep rule 'not_worse')" in kept.history[1]["decision"]
    weights.value = 1.0
    strict = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=1, batch_size=2, keep="improved"
    )
    assert not strict.history[1]["kept"] and "keep rule 'improved'" in strict.history[1]["decision"]
    assert weights.value == 1.0


def test_a_run_that_leaves_a_parameter_invalid_is_rolled_back():
    rate = Parameter("rate", "float", 0.1, lower=0.0, upper=0.9)
    k = Parameter("k", "float", 1.0, lower=-100, upper=100)

    def workflow(x):
        if k.value == 3.0:
            rate.value = 99.0  # code the workflow runs wrote around the optimizer
        return scale(x, k)

    target = FunctionTarget(workflow, [k, rate])
    result = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), ScriptedLLM([say(3.0)])), max_steps=1, batch_size=2
    )
    step = result.history[1]
    # the write is caught as a write around the optimizer (before validation would catch its invalid value)
    assert not step["kept"] and "wrote around the optimizer" in step["decision"] and "rate" in step["wrote_around"]
    assert (k.value, rate.value) == (1.0, 0.1)


def test_a_finished_run_directory_says_so_and_does_nothing(tmp_path, caplog):
    target, k = make()
    llm = ScriptedLLM([say(3.0)])
    optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=1, batch_size=2, run_dir=str(tmp_path)
    )
    caplog.set_level(logging.WARNING, logger="opto")
    again = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=1, batch_size=2, run_dir=str(tmp_path)
    )
    assert again.stopped_reason == "already_finished" and len(llm.requests) == 1
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "already holds a finished run" in message and "max_steps > 1" in message and "new run_dir" in message


def test_observe_is_replayed_from_the_history_on_resume(tmp_path):
    replies = [say(2.0), say(3.0), say(2.5), say(2.9)]
    target, k = make()
    straight = Recording(target.parameters(), ScriptedLLM(replies))
    optimize(target, TRAIN, feedback, straight, TRAIN, max_steps=4, batch_size=2)
    target, k = make()
    first = Recording(target.parameters(), ScriptedLLM(replies[:2]))
    optimize(target, TRAIN, feedback, first, TRAIN, max_steps=2, batch_size=2, run_dir=str(tmp_path))
    target, k = make()
    second = Recording(target.parameters(), ScriptedLLM(replies[2:]))
    optimize(target, TRAIN, feedback, second, TRAIN, max_steps=4, batch_size=2, run_dir=str(tmp_path))
    assert second.seen == straight.seen and len(straight.seen) == 5


def test_result_save_values_feeds_apply(tmp_path):
    target, k = make()
    result = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), ScriptedLLM([say(3.0)])), max_steps=1, batch_size=2
    )
    path = result.save_values(tmp_path / "best.json")
    saved = load_values(path)
    assert saved == {"k": 3.0} and saved.meta["framework"] == "python" and saved.meta["score"] == 0.0
    fresh, param = make()
    fresh.apply(dict(saved))
    assert param.value == 3.0


def test_approve_sees_each_proposal_first_and_may_edit_or_reject():
    seen = []

    def approve(changes):
        seen.append([(c.name, c.kind, c.old, c.new) for c in changes])
        return {"k": 2.5} if len(seen) == 1 else False  # edit the first proposal, reject the second

    target, k = make()
    llm = ScriptedLLM([say(3.0), say(4.0)])
    result = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), TRAIN, max_steps=2, batch_size=2, approve=approve
    )
    assert seen == [[("k", "float", 1.0, 3.0)], [("k", "float", 2.5, 4.0)]]
    first, second = result.history[1:]
    assert first["approval"] == {"k": "edited"} and first["values_after"] == {"k": 2.5} and first["kept"]
    assert second["approval"] == {"k": "rejected"} and not second["kept"] and k.value == 2.5


def test_an_edit_that_breaks_the_rules_is_refused():
    target, k = make()
    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(3.0)])),
        max_steps=1,
        batch_size=2,
        approve=lambda changes: {"k": 1000.0},
    )
    assert "above the upper bound" in result.history[1]["approval"]["k"] and k.value == 1.0


def test_a_stop_file_cancels_the_runs_in_flight(tmp_path):
    import time

    k = Parameter("k", "float", 1.0, lower=-100, upper=100)
    runs = []

    def workflow(x):
        runs.append(k.value)
        if k.value == 3.0 and not (tmp_path / "run" / "STOP").exists():
            (tmp_path / "run" / "STOP").write_text("")  # asked to stop while the check runs are going on
        time.sleep(0.15)
        return scale(x, k)

    target = FunctionTarget(workflow, [k])
    train = [{"x": float(i)} for i in range(1, 17)]
    result = optimize(
        target,
        train,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(3.0)])),
        max_steps=5,
        batch_size=16,
        run_dir=str(tmp_path / "run"),
    )
    assert result.stopped_reason == "stop_file"
    checks = [v for v in runs if v == 3.0]
    assert 1 <= len(checks) < 16  # the check was cut short, not run to the end
    assert not result.history[1]["kept"] and k.value == 1.0 and result.best_values == {"k": 1.0}
