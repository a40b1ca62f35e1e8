"""Executors in this process: threads (the default) and asyncio. Same contract, same results.

Ray has its own file (tests/test_executors_ray.py) with one local instance for the session.
"""

from __future__ import annotations

import logging
import threading

import pytest
from executor_scenarios import (
    CHAIN_TRAIN,
    CHAIN_VAL,
    TRAIN,
    VAL,
    WaitingTarget,
    chain_feedback,
    chain_llm,
    chain_target,
    comparable,
    prompt_name,
    scale_feedback,
    scale_llm,
    scale_target,
    word_feedback,
)

from opto_core.engine.executors import (
    AsyncioExecutor,
    EvaluationCancelled,
    EvaluationTimeout,
    FeedbackError,
    InfrastructureError,
    ThreadExecutor,
    make_executor,
)
from opto_core.engine.loop import optimize
from opto_core.engine.settings import Settings
from opto_core.optimizers.optoprime import OptoPrime

EXECUTORS = {"threads": ThreadExecutor, "asyncio": AsyncioExecutor}


@pytest.fixture(params=["threads", "asyncio"])
def executor(request):
    made = EXECUTORS[request.param](4)
    yield made
    made.close()


def evaluate(executor, target, examples, feedback=word_feedback):
    return executor.evaluate(
        target, examples, feedback, indices=list(range(100, 100 + len(examples))), failure_score=-1.0
    )


# ----- choosing an executor, bad input -------------------------------------------------------------------
def test_make_executor_builds_each_named_executor_with_its_settings():
    threads = make_executor(Settings(num_threads=3, eval_timeout=2.0))
    assert isinstance(threads, ThreadExecutor) and threads.concurrency == 3 and threads.eval_timeout == 2.0
    loop = make_executor(Settings(executor="asyncio", concurrency=8))
    assert isinstance(loop, AsyncioExecutor) and loop.concurrency == 8
    mine = ThreadExecutor(2)
    assert make_executor(Settings(executor=mine)) is mine


def test_bad_executor_settings_are_clear_errors():
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        Settings(concurrency=0)
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        AsyncioExecutor(0)

    class Broken:
        concurrency = 0

        def evaluate(self, *a, **k):
            return []

        def close(self):
            pass

    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        make_executor(Settings(executor=Broken()))
    with pytest.raises(TypeError, match="evaluate"):
        make_executor(Settings(executor=object()))
    with pytest.raises(ValueError, match="unknown executor 'dask'.*threads.*asyncio.*ray"):
        make_executor(Settings(executor="dask"))


# ----- the contract --------------------------------------------------------------------------------------
def test_results_come_back_in_order_with_whose_failure_it_was(executor):
    target = WaitingTarget(delay=0.01)
    examples = [{"x": 1}, {"x": 2, "fail": True}, {"x": 3, "crash": True}, {"x": 4}]
    results = evaluate(executor, target, examples)
    assert [r.index for r in results] == [100, 101, 102, 103]
    assert [r.output for r in results][::3] == ["hello 1", "hello 4"]
    assert [r.failed for r in results] == [False, True, True, False]
    assert [r.error_kind for r in results] == [None, "workflow", "infrastructure", None]
    assert isinstance(results[1].output, ValueError) and results[1].feedback.score == -1.0
    assert isinstance(results[2].output, InfrastructureError) and "the adapter broke" in str(results[2].output)
    assert results[1].graph.of_kind("exception") and results[2].graph.of_kind("exception")
    assert results[0].feedback.score == len("hello 1") and results[0].seconds > 0


def test_a_feedback_function_that_raises_stops_the_batch_with_its_example(executor):
    def bad(example, output):
        raise KeyError("label")

    with pytest.raises(FeedbackError, match=r"feedback_fn raised on example 10[01] .*KeyError"):
        evaluate(executor, WaitingTarget(delay=0.01), [{"x": 1}, {"x": 2}], bad)


@pytest.mark.parametrize("async_runs", [True, False])
def test_a_run_over_eval_timeout_is_an_infrastructure_failure_and_the_batch_goes_on(async_runs):
    for kind in EXECUTORS.values():
        executor = kind(4, eval_timeout=0.3)
        target = WaitingTarget(delay=0.01, slow_delay=3.0, async_runs=async_runs)
        results = evaluate(executor, target, [{"x": 1}, {"x": 2, "slow": True}, {"x": 3}])
        executor.close()
        assert [r.failed for r in results] == [False, True, False], kind
        assert results[1].error_kind == "infrastructure"
        assert isinstance(results[1].output, EvaluationTimeout) and "eval_timeout=0.3s" in str(results[1].output)


def test_cancel_ends_the_batch_at_once_and_marks_what_did_not_finish(executor):
    target = WaitingTarget(delay=0.01, slow_delay=30.0)
    timer = threading.Timer(0.3, executor.cancel)
    timer.start()
    results = evaluate(executor, target, [{"x": 1}, {"x": 2, "slow": True}, {"x": 3, "slow": True}])
    assert [r.failed for r in results] == [False, True, True]
    assert all(isinstance(r.output, EvaluationCancelled) and r.error_kind == "infrastructure" for r in results[1:])


# ----- asyncio: one loop, no thread per run -----------------------------------------------------------------
def test_asyncio_runs_async_targets_concurrently_on_its_one_thread():
    executor = AsyncioExecutor(16)
    target = WaitingTarget(delay=0.1)
    before = threading.active_count()
    results = evaluate(executor, target, [{"x": i} for i in range(48)])
    assert [r.output for r in results] == [f"hello {i}" for i in range(48)]
    assert target.max_inflight == 16  # the concurrency bound, reached and respected
    assert target.threads == {executor.thread.ident}  # every run on the executor's loop thread
    assert max(target.active_counts) <= before + 1  # one thread in all: the loop's
    again = WaitingTarget(delay=0.01)
    evaluate(executor, again, [{"x": 1}, {"x": 2}])
    assert again.threads == {executor.thread.ident}  # the same loop, batch after batch
    executor.close()
    assert executor.thread is None


def test_asyncio_runs_a_sync_target_in_a_bounded_pool_and_says_so_once(caplog):
    executor = AsyncioExecutor(3)
    target = WaitingTarget(delay=0.05, async_runs=False)
    with caplog.at_level(logging.INFO, logger="opto"):
        evaluate(executor, target, [{"x": i} for i in range(9)])
        results = evaluate(executor, target, [{"x": i} for i in range(9)])
    loop_thread = executor.thread.ident
    executor.close()
    assert [r.output for r in results] == [f"hello {i}" for i in range(9)]
    assert target.max_inflight == 3  # bounded by concurrency
    assert loop_thread not in target.threads and 1 < len(target.threads) <= 3  # in the pool, never on the loop
    said = [r.message for r in caplog.records if "has no async arun" in r.message]
    assert len(said) == 1 and "pool of 3 threads" in said[0]


# ----- the same optimization under each executor ------------------------------------------------------------
def _scale_run(executor: str, **settings):
    target = scale_target()
    llm = scale_llm()
    result = optimize(
        target,
        TRAIN,
        scale_feedback,
        OptoPrime(target.parameters(), llm),
        VAL,
        max_steps=3,
        batch_size=3,
        executor=executor,
        concurrency=4,
        **settings,
    )
    return result, llm


def _chain_run(executor: str, **settings):
    target = chain_target()
    llm = chain_llm(prompt_name(target))
    result = optimize(
        target,
        CHAIN_TRAIN,
        chain_feedback,
        OptoPrime(target.parameters(), llm),
        CHAIN_VAL,
        max_steps=3,
        batch_size=3,
        executor=executor,
        concurrency=4,
        **settings,
    )
    return result, llm, target


def test_plain_python_optimization_is_the_same_under_threads_and_asyncio():
    threads, _ = _scale_run("threads")
    loop, _ = _scale_run("asyncio")
    assert threads.best_values == loop.best_values == {"k": 3.0}
    assert [r["kept"] for r in threads.history[1:]] == [False, True, False]
    assert comparable(threads.history) == comparable(loop.history)
    assert (threads.best_score, threads.initial_score, threads.usage) == (
        loop.best_score,
        loop.initial_score,
        loop.usage,
    )


def test_langchain_optimization_is_the_same_under_threads_and_asyncio():
    threads, _, _ = _chain_run("threads")
    loop, _, target = _chain_run("asyncio")
    name = prompt_name(target)
    assert threads.best_values == loop.best_values and loop.best_values[name] == "You answer questions in UPPER CASE."
    assert threads.best_score == loop.best_score == 1.0 and threads.initial_score == loop.initial_score == 0.0
    assert comparable(threads.history) == comparable(loop.history)
    assert target.run(CHAIN_VAL[0])[0] == "CHECK 0"  # the best prompt is in the live chain


@pytest.mark.parametrize("executor", ["threads", "asyncio"])
def test_budgets_are_exact_under_each_executor(executor):
    result, llm = _scale_run(executor, max_llm_calls=2)
    assert result.stopped_reason == "max_llm_calls" and result.usage["calls"] == 2 == len(llm.requests)
    counted, _ = _scale_run(executor, max_evaluations=3 + 2 * (3 + 3))  # initial val + 2 x (batch + val)
    assert counted.stopped_reason == "max_evaluations" and counted.steps == 2
    assert counted.history[-1]["evaluations_total"] == 15


# ----- the adapters' async entry points -----------------------------------------------------------------------
def test_a_dspy_program_under_asyncio_gives_what_it_gives_under_threads(tmp_path, monkeypatch):
    pytest.importorskip("dspy", reason="the dspy extra is not installed")
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path))
    import dspy

    from opto_adapters.dspy.target import ProgramTarget
    from opto_adapters.dspy.testing import rule_lm

    lm = rule_lm(lambda call: {name: f"{name} for {call.inputs.get('question')}" for name in call.output_fields})
    target = ProgramTarget(dspy.ChainOfThought("question -> answer"), lm=lm)
    examples = [{"question": f"q{i}"} for i in range(4)]
    runs = {}
    for name, kind in EXECUTORS.items():
        executor = kind(4)
        runs[name] = evaluate(
            executor, target, examples, lambda example, output: float(example["question"] in output.answer)
        )
        executor.close()
    assert (
        [r.output.answer for r in runs["asyncio"]]
        == [r.output.answer for r in runs["threads"]]
        == [f"answer for q{i}" for i in range(4)]
    )
    assert [[n.name for n in r.graph.nodes] for r in runs["asyncio"]] == [
        [n.name for n in r.graph.nodes] for r in runs["threads"]
    ]
    assert all(r.feedback.score == 1.0 for r in runs["asyncio"])


def test_ctrl_c_during_a_batch_cancels_what_is_still_running():
    executor = AsyncioExecutor(4)
    target = WaitingTarget(delay=0.01, slow_delay=30.0)

    def interrupted(example, output):
        raise KeyboardInterrupt  # the second Ctrl-C arrives while the driver scores the first result

    with pytest.raises(KeyboardInterrupt):
        evaluate(executor, target, [{"x": 1}, {"x": 2, "slow": True}, {"x": 3, "slow": True}], interrupted)
    executor.close()  # returns at once: the slow runs were cancelled, not awaited
    assert target.inflight == 0
