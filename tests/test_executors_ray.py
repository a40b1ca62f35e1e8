"""The Ray executor on a local instance (2 CPUs, started once for this file, shut down at its end).

Ray is a test dependency here (the `ray` extra is in `all`): these tests fail, not skip, without it.
"""

from __future__ import annotations

import os
import signal
import threading

import cloudpickle
import executor_scenarios
import pytest
import ray
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

from opto_core.engine.executors import EvaluationTimeout, make_executor
from opto_core.engine.executors.ray_cluster import RayExecutor, SecretInPayload, TargetNotPicklable
from opto_core.engine.loop import optimize
from opto_core.engine.settings import Settings
from opto_core.optimizers.optoprime import OptoPrime

# the workers cannot import this directory's helper module: its functions travel by value
cloudpickle.register_pickle_by_value(executor_scenarios)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test instance: no token file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def evaluate(executor, target, examples, feedback=word_feedback, values=None):
    return executor.evaluate(
        target, examples, feedback, indices=list(range(len(examples))), failure_score=-1.0, values=values
    )


def test_runs_on_workers_with_the_step_values_and_feedback_on_the_driver():
    executor = make_executor(Settings(executor="ray", concurrency=4))
    assert isinstance(executor, RayExecutor)
    target = WaitingTarget(delay=0.05)
    try:
        results = evaluate(executor, target, [{"x": i} for i in range(6)], values={"word": "bonjour"})
        pids = set(executor.worker_pids())
    finally:
        executor.close()
    assert [r.output for r in results] == [f"bonjour {i}" for i in range(6)]
    assert target.word.value == "hello"  # the driver's target is untouched
    assert {int(r.worker.split()[1]) for r in results} <= pids and os.getpid() not in pids
    assert all(r.feedback.text == f"pid {os.getpid()}" for r in results)  # feedback ran here
    assert [n.kind for n in results[0].graph.nodes][-1] == "output" and results[0].graph.of_kind("parameter")
    assert len(pids) == 2  # one actor per CPU of the instance


def test_workflow_and_infrastructure_failures_come_back_as_such():
    executor = RayExecutor(2)
    try:
        results = evaluate(executor, WaitingTarget(delay=0.01), [{"x": 1, "fail": True}, {"x": 2, "crash": True}])
    finally:
        executor.close()
    assert [r.error_kind for r in results] == ["workflow", "infrastructure"]
    assert isinstance(results[0].output, ValueError) and "the adapter broke" in str(results[1].output)


def test_a_worker_killed_mid_step_is_counted_and_its_examples_retried_on_another():
    executor = RayExecutor(4)
    target = WaitingTarget(delay=1.5)
    try:
        evaluate(executor, target, [{"x": 0}])  # the pool exists; now kill one of its workers mid-batch
        victim = executor.worker_pids()[0]
        threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
        results = evaluate(executor, target, [{"x": i} for i in range(4)])
        survivors = set(executor.worker_pids())
    finally:
        executor.close()
    assert [r.output for r in results] == [f"hello {i}" for i in range(4)]  # every example finished
    lost = [r for r in results if r.retried]
    assert lost and all("worker died" in r.retried[0] for r in lost)  # counted, with the cause
    assert all(int(r.worker.split()[1]) != victim for r in results)
    assert executor.replaced == 1 and victim not in survivors


def test_a_timed_out_task_is_retried_once_then_fails_without_stalling_the_step():
    executor = RayExecutor(2, eval_timeout=0.5)
    try:
        results = evaluate(executor, WaitingTarget(delay=0.01, slow_delay=60), [{"x": 1}, {"x": 2, "slow": True}])
    finally:
        executor.close()
    assert results[0].output == "hello 1" and not results[0].failed
    assert results[1].failed and results[1].error_kind == "infrastructure"
    assert isinstance(results[1].output, EvaluationTimeout) and len(results[1].retried) == 1
    assert "eval_timeout=0.5s" in results[1].retried[0]


def test_a_target_that_cannot_be_pickled_names_the_attribute_and_the_factory():
    target = chain_target()  # its fake model holds a threading.Lock
    executor = RayExecutor(2)
    with pytest.raises(TargetNotPicklable, match=r"target\.\S*_lock.*cannot be pickled.*target_factory"):
        evaluate(executor, target, CHAIN_VAL, chain_feedback)
    executor.close()


def test_a_secret_from_the_environment_is_never_pickled_into_a_task(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-test-0123456789")
    target = WaitingTarget()
    target.client_key = "sk-test-0123456789"  # a client object that captured the key
    executor = RayExecutor(2)
    with pytest.raises(SecretInPayload, match="MY_SERVICE_API_KEY.*target_factory"):
        evaluate(executor, target, [{"x": 1}])
    executor.close()


def test_without_the_extra_the_error_names_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"opto-adapters\[ray\]"):
        make_executor(Settings(executor="ray"))


# ----- the same optimization as under threads and asyncio -----------------------------------------------------
def test_plain_python_optimization_is_the_same_under_ray():
    runs = {}
    for executor in ("threads", "ray"):
        target = scale_target()
        llm = scale_llm()
        runs[executor] = optimize(
            target,
            TRAIN,
            scale_feedback,
            OptoPrime(target.parameters(), llm),
            VAL,
            max_steps=3,
            batch_size=3,
            executor=executor,
            concurrency=4,
        )
    assert runs["ray"].best_values == runs["threads"].best_values == {"k": 3.0}
    assert comparable(runs["ray"].history) == comparable(runs["threads"].history)
    assert runs["ray"].usage == runs["threads"].usage


def test_budgets_are_exact_under_ray():
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
        executor="ray",
        concurrency=4,
        max_evaluations=15,
        max_llm_calls=5,
    )
    assert result.stopped_reason == "max_evaluations" and result.steps == 2
    assert result.history[-1]["evaluations_total"] == 15 and result.usage["calls"] == 2 == len(llm.requests)


def test_langchain_optimization_is_the_same_under_ray_with_a_target_factory():
    runs = {}
    for executor in ("threads", "ray"):
        target = chain_target()
        llm = chain_llm(prompt_name(target))
        runs[executor] = optimize(
            target,
            CHAIN_TRAIN,
            chain_feedback,
            OptoPrime(target.parameters(), llm),
            CHAIN_VAL,
            max_steps=3,
            batch_size=3,
            executor=executor,
            concurrency=4,
            target_factory=chain_target,
            max_llm_calls=3,
        )
    assert runs["ray"].best_values == runs["threads"].best_values
    assert runs["ray"].best_score == 1.0
    assert comparable(runs["ray"].history) == comparable(runs["threads"].history)
    assert runs["ray"].usage["calls"] == 3


def test_resume_after_a_kill_works_with_ray(tmp_path):
    def killed_after_step_2(record):
        if record["step"] == 2:
            raise KeyboardInterrupt  # a hard stop: the process is gone after step 2's checkpoint

    target = scale_target()
    with pytest.raises(KeyboardInterrupt):
        optimize(
            target,
            TRAIN,
            scale_feedback,
            OptoPrime(target.parameters(), scale_llm()),
            VAL,
            max_steps=3,
            batch_size=3,
            executor="ray",
            concurrency=2,
            run_dir=str(tmp_path),
            on_step=killed_after_step_2,
        )
    resumed_target = scale_target()
    llm = scale_llm()
    llm.replies = llm.replies[2:]  # the first two proposals were made before the "crash"
    resumed = optimize(
        resumed_target,
        TRAIN,
        scale_feedback,
        OptoPrime(resumed_target.parameters(), llm),
        VAL,
        max_steps=3,
        batch_size=3,
        executor="ray",
        concurrency=2,
        run_dir=str(tmp_path),
    )
    straight_target = scale_target()
    straight = optimize(
        straight_target,
        TRAIN,
        scale_feedback,
        OptoPrime(straight_target.parameters(), scale_llm()),
        VAL,
        max_steps=3,
        batch_size=3,
    )
    assert resumed.best_values == straight.best_values == {"k": 3.0}
    assert comparable(resumed.history) == comparable(straight.history)


def test_cancel_and_ctrl_c_end_a_ray_batch_at_once():
    executor = RayExecutor(2)
    target = WaitingTarget(delay=0.01, slow_delay=60.0)
    try:
        evaluate(executor, target, [{"x": 0}])  # workers up
        threading.Timer(0.5, executor.cancel).start()
        results = evaluate(executor, target, [{"x": 1}, {"x": 2, "slow": True}])
        assert not results[0].failed and results[1].error_kind == "infrastructure"
        assert "cancelled" in str(results[1].output)

        def interrupted(example, output):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            evaluate(executor, target, [{"x": 3}, {"x": 4, "slow": True}], interrupted)
        assert executor._inflight == {}
        again = evaluate(executor, target, [{"x": 5}, {"x": 6}])  # the workers are free again
        assert [r.output for r in again] == ["hello 5", "hello 6"]
    finally:
        executor.close()


def _unimportable_factory():  # defined in this test module, which Ray's workers cannot import
    return WaitingTarget()


@pytest.mark.parametrize(
    "factory, cause",
    [
        (executor_scenarios.no_key_factory, "ValueError: OPENAI_API_KEY is not set on this worker"),
        (_unimportable_factory, "ModuleNotFoundError: No module named 'test_executors_ray'"),
    ],
)
def test_a_factory_that_fails_on_the_worker_says_why(factory, cause):
    executor = RayExecutor(2, target_factory=factory)
    try:
        [result] = evaluate(executor, WaitingTarget(), [{"x": 1}])
    finally:
        executor.close()
    assert result.failed and result.error_kind == "infrastructure" and len(result.retried) == 1
    assert f"building the workflow on the worker failed: {cause}" in str(result.output)


def test_the_number_of_actors_can_be_set_and_each_runs_several_examples():
    executor = RayExecutor(6, actors=1)
    target = WaitingTarget(delay=0.2)
    try:
        results = evaluate(executor, target, [{"x": i} for i in range(6)])
        assert len(executor.worker_pids()) == 1
    finally:
        executor.close()
    assert [r.output for r in results] == [f"hello {i}" for i in range(6)]
    assert len({r.worker for r in results}) == 1


# ----- suggested code that ends or hangs its run ------------------------------------------------------------
@pytest.mark.parametrize("do, raised", [("exit", "SystemExit(0)"), ("interrupt", "KeyboardInterrupt")])
def test_an_exit_raised_by_the_workflow_fails_that_run_and_the_worker_lives_on(do, raised):
    from executor_scenarios import MisbehavingTarget, pid_feedback

    executor = RayExecutor(2)
    target = MisbehavingTarget()
    try:
        results = evaluate(executor, target, [{"x": 1}, {"x": 2, "do": do}, {"x": 3}], pid_feedback)
        pids = set(executor.worker_pids())
        again = evaluate(executor, target, [{"x": i} for i in range(4)], pid_feedback)
        assert set(executor.worker_pids()) == pids and executor.replaced == 0  # no worker was lost
    finally:
        executor.close()
    assert [r.failed for r in results] == [False, True, False]
    assert results[1].error_kind == "workflow" and raised in str(results[1].output) and not results[1].retried
    assert not any(r.failed for r in again)


def test_a_write_around_the_optimizer_on_a_worker_fails_that_run_and_replaces_the_worker():
    """A Ray actor keeps its workflow across runs: a write there would poison every later run on it."""
    from executor_scenarios import MisbehavingTarget, pid_feedback

    executor = RayExecutor(1)
    target = MisbehavingTarget()
    try:
        results = evaluate(
            executor,
            target,
            [{"x": 1}, {"x": 2, "do": "write_around"}, {"x": 3}],
            pid_feedback,
            values={"word": "hello"},
        )
        again = evaluate(executor, target, [{"x": i} for i in range(3)], pid_feedback, values={"word": "hello"})
    finally:
        executor.close()
    assert [r.failed for r in results] == [False, True, False]
    assert results[1].error_kind == "wrote_around" and results[1].drift == ["word"]
    assert "wrote around the optimizer (word: its value changed)" in str(results[1].output)
    assert executor.replaced == 1 and target.word.value == "hello"
    assert not any(r.failed for r in again) and all(r.output.startswith("hello") for r in [results[2], *again])


def test_while_the_runs_happen_on_actors_compiling_a_value_here_runs_no_new_module():
    from executor_scenarios import MisbehavingTarget, pid_feedback

    from opto_core.kernel.code import runs_elsewhere

    executor = RayExecutor(1)
    try:
        evaluate(executor, MisbehavingTarget(), [{"x": 1}], pid_feedback)
        assert runs_elsewhere()
    finally:
        executor.close()
    assert not runs_elsewhere()


def test_a_run_that_never_returns_costs_its_example_and_no_healthy_one():
    """The stuck run's worker is killed and replaced, so later runs never queue behind it.

    (Several runs at once on one actor share its event loop: a run that blocks the loop delays the
    others too, and they may time out with it. ``isolation="process"`` runs one example per process.)
    """
    from executor_scenarios import MisbehavingTarget, pid_feedback

    executor = RayExecutor(2, eval_timeout=5.0, retries=0)  # generous: a loaded CI machine starts actors slowly
    target = MisbehavingTarget()
    try:
        results = evaluate(
            executor,
            target,
            [
                {"x": 1, "do": "pause", "seconds": 0.5},
                {"x": 2, "do": "spin"},
                {"x": 3, "do": "pause", "seconds": 0.5},
                {"x": 4, "do": "sleep"},
            ],
            pid_feedback,
        )
        later = evaluate(executor, target, [{"x": i, "do": "pause", "seconds": 0.2} for i in range(4)], pid_feedback)
    finally:
        executor.close()
    assert [r.failed for r in results] == [False, True, False, True]
    assert all(isinstance(r.output, EvaluationTimeout) for r in (results[1], results[3]))
    assert not any(r.failed for r in later)  # later batches do not inherit a stuck slot
    assert executor.replaced >= 1


def test_a_worker_that_exits_in_a_run_is_replaced_and_charges_that_example_only():
    from executor_scenarios import MisbehavingTarget, pid_feedback

    executor = RayExecutor(2, retries=0)
    try:
        target = MisbehavingTarget()
        results = evaluate(executor, target, [{"x": 1}, {"x": 2, "do": "die"}, {"x": 3}], pid_feedback)
        again = evaluate(executor, target, [{"x": i} for i in range(4)], pid_feedback)
    finally:
        executor.close()
    assert [r.failed for r in results] == [False, True, False]
    assert results[1].error_kind == "infrastructure" and "worker died" in str(results[1].output)
    assert executor.replaced == 1 and not any(r.failed for r in again)
