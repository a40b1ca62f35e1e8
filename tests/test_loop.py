"""The optimization loop with a scripted model: rollback, budgets, resume, STOP, secrets, errors."""

import json
import os
from pathlib import Path

import pytest

from opto_core import Feedback, FeedbackError, Parameter, optimize
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


@op
def scale(x, k):
    """Multiply x by k."""
    return x * k


@op
def explode(x):
    raise RuntimeError("tool is down")


TRAIN = [{"x": float(i)} for i in range(1, 7)]
VAL = [{"x": 10.0}, {"x": 20.0}]


def feedback(example, output):
    want = 3 * example["x"]
    return Feedback(-abs(output - want), f"expected {want}, got {output}")


def make_target(k=1.0):
    k_param = Parameter("k", "float", k, lower=-100, upper=100)
    return FunctionTarget(lambda x: scale(x, k_param), [k_param]), k_param


def say(k):
    return json.dumps({"reasoning": f"try k={k}", "suggestion": {"k": k}})


def test_keeps_improvements_and_rolls_back_what_got_worse(tmp_path):
    target, k = make_target()
    llm = ScriptedLLM([say(0.0), say(3.0), say(2.0)])
    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), llm),
        VAL,
        max_steps=3,
        batch_size=2,
        run_dir=str(tmp_path),
    )
    kept = [r["kept"] for r in result.history[1:]]
    assert kept == [False, True, False]  # 0.0 is worse, 3.0 is perfect, 2.0 is worse than 3.0
    assert result.best_values == {"k": 3.0} and k.value == 3.0 and result.best_score == 0.0
    assert result.initial_score == pytest.approx(-30.0)
    assert result.stopped_reason == "max_steps" and result.usage["calls"] == 3
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[2])["proposal"]["reasoning"] == "try k=3.0"
    assert json.loads((tmp_path / "checkpoint.json").read_text())["best"] == {"k": 3.0}


def test_without_valset_steps_are_judged_on_their_batch():
    target, k = make_target()
    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(-5.0), say(3.0)])),
        max_steps=2,
        batch_size=3,
    )
    assert [r["kept"] for r in result.history[1:]] == [False, True] and k.value == 3.0


def test_call_budget_is_exact_even_with_retries():
    target, _ = make_target()
    bad = json.dumps({"reasoning": "", "suggestion": {"k": 1000}})  # out of bounds: triggers a retry
    llm = ScriptedLLM([bad], repeat_last=True)
    result = optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=10, max_llm_calls=5)
    assert len(llm.requests) == 5 and result.usage["calls"] == 5
    assert result.stopped_reason == "max_llm_calls" and len(result.history) == 1 + 3  # 2 + 2 + 1 calls


def test_token_and_cost_budgets():
    target, _ = make_target()
    llm = ScriptedLLM([say(1.0)], repeat_last=True, cost_per_call=0.01)
    result = optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=50, max_cost_usd=0.03)
    assert result.stopped_reason == "max_cost_usd" and result.usage["calls"] == 3
    assert result.usage["cost_usd"] == pytest.approx(0.03)
    target, _ = make_target()
    llm = ScriptedLLM([say(1.0)], repeat_last=True)
    result = optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=50, max_tokens=1)
    assert result.stopped_reason == "max_tokens" and result.usage["calls"] == 1


def test_target_score_stops_early():
    target, _ = make_target()
    llm = ScriptedLLM([say(3.0)], repeat_last=True)
    result = optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), llm), VAL, max_steps=10, target_score=0.0)
    assert result.stopped_reason == "target_score" and len(llm.requests) == 1


REPLIES = [say(2.0), say(0.5), say(2.5), say(3.0), say(2.9)]


class Crash(Exception):
    pass


def test_resume_after_a_crash_gives_the_same_final_state(tmp_path):
    reference_target, _ = make_target()
    reference = optimize(
        reference_target,
        TRAIN,
        feedback,
        OptoPrime(reference_target.parameters(), ScriptedLLM(REPLIES)),
        VAL,
        max_steps=5,
        batch_size=2,
        run_dir=str(tmp_path / "ref"),
        seed=7,
    )

    target, _ = make_target()

    def crash_after_two(record):
        if record["step"] == 2:
            raise Crash()

    first_llm = ScriptedLLM(REPLIES)
    with pytest.raises(Crash):
        optimize(
            target,
            TRAIN,
            feedback,
            OptoPrime(target.parameters(), first_llm),
            VAL,
            max_steps=5,
            batch_size=2,
            run_dir=str(tmp_path / "run"),
            seed=7,
            on_step=crash_after_two,
        )
    assert len(first_llm.requests) == 2
    fresh_target, _ = make_target()  # a new process: nothing in memory
    second_llm = ScriptedLLM(REPLIES[2:])
    resumed = optimize(
        fresh_target,
        TRAIN,
        feedback,
        OptoPrime(fresh_target.parameters(), second_llm),
        VAL,
        max_steps=5,
        batch_size=2,
        run_dir=str(tmp_path / "run"),
        seed=7,
    )
    assert resumed.best_values == reference.best_values and resumed.best_score == reference.best_score

    def strip(history):
        return [{k: v for k, v in r.items() if k not in ("time", "seconds", "graph")} for r in history]

    assert strip(resumed.history) == strip(reference.history)
    # the optimizer's memory came back from the checkpoint: the 3rd prompt shows steps 1 and 2
    assert second_llm.requests[0]["messages"][1]["content"].count('{"variables"') == 2


def test_stop_file_ends_the_run_after_the_current_step(tmp_path):
    target, _ = make_target()

    def touch_stop(record):
        (tmp_path / "STOP").write_text("")

    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(2.0)], repeat_last=True)),
        max_steps=10,
        run_dir=str(tmp_path),
        on_step=touch_stop,
    )
    assert result.stopped_reason == "stop_file" and len(result.history) == 2
    assert json.loads((tmp_path / "checkpoint.json").read_text())["done"] is True


def test_no_secret_is_ever_written(tmp_path, monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    class KeyedLLM(ScriptedLLM):
        api_key = secret
        base_url = "http://127.0.0.1:9/v1"

    target, _ = make_target()
    optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), KeyedLLM([say(3.0)], repeat_last=True)),
        VAL,
        max_steps=2,
        run_dir=str(tmp_path),
    )
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert len(files) >= 4
    assert all(secret not in p.read_text() for p in files)
    assert json.loads((tmp_path / "config.json").read_text())["base_url"] == "http://127.0.0.1:9/v1"


def test_failing_runs_are_feedback_until_max_errors():
    k = Parameter("k", "float", 1.0)
    target = FunctionTarget(lambda x: explode(scale(x, k)), [k])
    llm = ScriptedLLM([say(2.0)], repeat_last=True)
    result = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), max_steps=10, batch_size=2, max_errors=7
    )  # 6 failures in the first evaluation, 2 more per batch
    assert result.stopped_reason == "max_errors"
    prompt = llm.requests[0]["messages"][1]["content"]
    assert "RuntimeError: tool is down" in prompt and "The run raised RuntimeError" in prompt


def test_feedback_errors_name_the_example():
    target, _ = make_target()

    def broken(example, output):
        if example["x"] == 4.0:
            raise KeyError("label")
        return 0.0

    with pytest.raises(FeedbackError, match=r"example 3 \(\{'x': 4.0\}\).*KeyError"):
        optimize(target, TRAIN, broken, OptoPrime(target.parameters(), ScriptedLLM([])), max_steps=1)
    with pytest.raises(FeedbackError, match="returned \\[1\\]"):
        optimize(target, TRAIN, lambda e, o: [1], OptoPrime(target.parameters(), ScriptedLLM([])), max_steps=1)


def test_threads_give_the_same_results_as_serial():
    results = []
    for threads in (1, 4):
        target, _ = make_target()
        result = optimize(
            target,
            TRAIN,
            feedback,
            OptoPrime(target.parameters(), ScriptedLLM([say(2.0), say(3.0)])),
            VAL,
            max_steps=2,
            batch_size=4,
            num_threads=threads,
        )
        results.append([(r.get("batch"), r.get("batch_score"), r.get("eval_score")) for r in result.history])
    assert results[0] == results[1]


def test_ctrl_c_stops_after_the_current_step_with_everything_saved(tmp_path):
    import signal

    target, _ = make_target()
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup

    def press_ctrl_c(record):
        os.kill(os.getpid(), signal.SIGINT)

    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), ScriptedLLM([say(3.0)], repeat_last=True)),
        VAL,
        max_steps=10,
        run_dir=str(tmp_path),
        on_step=press_ctrl_c,
    )
    assert result.stopped_reason == "interrupted" and len(result.history) == 2
    checkpoint = json.loads((tmp_path / "checkpoint.json").read_text())
    assert checkpoint["step"] == 1 and checkpoint["best"] == {"k": 3.0}
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back


def test_an_llm_failure_stops_cleanly_and_the_run_resumes(tmp_path):
    target, k = make_target()

    def down(messages):
        raise ConnectionError("endpoint unreachable")

    llm = ScriptedLLM([say(2.0), down])
    result = optimize(
        target, TRAIN, feedback, OptoPrime(target.parameters(), llm), VAL, max_steps=4, run_dir=str(tmp_path)
    )
    assert result.stopped_reason == "optimizer_error" and "endpoint unreachable" in result.error
    assert k.value == 2.0 and len(result.history) == 2
    checkpoint = json.loads((tmp_path / "checkpoint.json").read_text())
    assert checkpoint["step"] == 1 and len(checkpoint["optimizer"]["memory"]) == 1  # the failed step left nothing
    fresh, _ = make_target()
    again = optimize(
        fresh,
        TRAIN,
        feedback,
        OptoPrime(fresh.parameters(), ScriptedLLM([say(3.0)], repeat_last=True)),
        VAL,
        max_steps=4,
        run_dir=str(tmp_path),
    )
    assert again.stopped_reason == "max_steps" and again.best_values == {"k": 3.0} and len(again.history) == 5
