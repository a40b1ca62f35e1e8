"""Suggested code that tries to end, hang or slow the run, under every executor in this process and isolated.

The workflow misbehaves on demand (`executor_scenarios.MisbehavingTarget`): ``raise SystemExit``,
``raise KeyboardInterrupt``, a busy loop, a sleep that never ends, ``os._exit``, ``SIGKILL`` of
itself. Whatever it does, the run fails (that example only), the executor goes on at full
concurrency for later batches, and the process can always exit. Ray has its own cases in
tests/test_executors_ray.py (one local instance for the session).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from executor_scenarios import RELEASE, MisbehavingTarget, pid_feedback

from opto_core import Parameter
from opto_core.engine.executors import AsyncioExecutor, EvaluationTimeout, ThreadExecutor, WorkflowExit
from opto_core.engine.executors.process import ProcessExecutor, WorkerLost
from opto_core.engine.loop import optimize
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

KINDS = {"threads": ThreadExecutor, "asyncio": AsyncioExecutor, "process": ProcessExecutor}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _release_spinning_threads():
    RELEASE.clear()
    yield
    RELEASE.set()  # abandoned in-process runs stop spinning once the test is over


def run_batch(executor, examples, target=None):
    target = target or MisbehavingTarget()
    return executor.evaluate(
        target, examples, pid_feedback, indices=list(range(len(examples))), failure_score=0.0, values={"word": "hello"}
    )


def make(kind, concurrency=2, **kwargs):
    return KINDS[kind](concurrency, **kwargs)


def healthy(results):
    return [(r.failed, r.error_kind) for r in results] == [(False, None)] * len(results)


# ----- exits raised by the workflow ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("do, raised", [("exit", "SystemExit(0)"), ("interrupt", "KeyboardInterrupt")])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_an_exit_raised_by_the_workflow_fails_that_run_and_nothing_else(kind, do, raised, concurrency):
    executor = make(kind, concurrency)
    try:
        results = run_batch(executor, [{"x": 1}, {"x": 2, "do": do}, {"x": 3}])
        assert [r.failed for r in results] == [False, True, False]
        failed = results[1]
        assert failed.error_kind == "workflow"  # the workflow's own failure: feedback for the optimizer
        assert type(failed.output).__name__ == "WorkflowExit" and raised in str(failed.output)
        assert raised in failed.feedback.text
        if kind != "process":
            assert isinstance(failed.output, WorkflowExit)
        assert healthy(run_batch(executor, [{"x": i} for i in range(4)]))  # the executor goes on
    finally:
        executor.close()


def test_a_real_ctrl_c_during_a_run_in_the_main_thread_still_stops_the_batch():
    executor = ThreadExecutor(1)  # runs in the calling (main) thread, one after the other
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run_batch(executor, [{"x": 1, "do": "sleep", "seconds": 5}, {"x": 2}])
    timer.join()


# ----- runs that never return ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("do", ["spin", "sleep"])
def test_a_run_that_never_returns_times_out_and_later_batches_run_at_full_concurrency(kind, do):
    executor = make(kind, 2, eval_timeout=1.0)
    try:
        # two stuck runs take both slots: the examples after them must still run
        results = run_batch(executor, [{"x": 1}, {"x": 2, "do": do}, {"x": 3, "do": do}, {"x": 4}, {"x": 5}])
        assert [r.failed for r in results] == [False, True, True, False, False]
        assert all(r.error_kind == "infrastructure" and isinstance(r.output, EvaluationTimeout) for r in results[1:3])
        later = run_batch(executor, [{"x": i, "do": "pause", "seconds": 0.3} for i in range(4)])
        assert healthy(later)  # no slot is lost to the stuck run: nothing of the later batch times out
        if kind == "asyncio" and do == "spin":
            assert executor.loops_replaced >= 1  # the busy loop blocked the event loop, which was replaced
        if kind == "process":
            assert executor.replaced == 2 and len(executor.worker_pids()) == 2
    finally:
        executor.close()


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_process_exits_after_a_run_that_never_returns(kind, tmp_path):
    """The scenario runs in a subprocess: it must end on its own, and no worker may outlive it."""
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from executor_scenarios import MisbehavingTarget, pid_feedback
        from opto_core.engine.executors import AsyncioExecutor, ThreadExecutor
        from opto_core.engine.executors.process import ProcessExecutor

        kind = {{"threads": ThreadExecutor, "asyncio": AsyncioExecutor, "process": ProcessExecutor}}[{kind!r}]
        executor = kind(2, eval_timeout=1.0)
        target = MisbehavingTarget()
        results = executor.evaluate(target, [{{"x": 1, "do": "sleep"}}, {{"x": 2}}], pid_feedback, indices=[0, 1],
                                    failure_score=0.0)
        pids = executor.worker_pids() if hasattr(executor, "worker_pids") else []
        print(json.dumps({{"failed": [r.failed for r in results], "error": type(results[0].output).__name__,
                          "pids": pids}}))
        # no close(): leaving the executor open must not keep the process alive either
    """)
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed"] == [True, False] and report["error"] == "EvaluationTimeout"
    _assert_gone(report["pids"])


def _assert_gone(pids, within=10.0):
    deadline = time.monotonic() + within
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.1)
    assert not alive, f"worker processes outlived their parent: {alive}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; only its parent has not read its status yet
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ----- processes that die --------------------------------------------------------------------------------
def test_a_worker_that_dies_in_a_run_costs_that_example_only():
    executor = ProcessExecutor(2)
    try:
        results = run_batch(executor, [{"x": 1}, {"x": 2, "do": "die", "code": 3}, {"x": 3, "do": "kill"}, {"x": 4}])
        assert [r.failed for r in results] == [False, True, True, False]
        assert all(isinstance(r.output, WorkerLost) and r.error_kind == "infrastructure" for r in results[1:3])
        assert "exited with code 3" in str(results[1].output) and "SIGKILL" in str(results[2].output)
        assert executor.replaced == 2
        assert healthy(run_batch(executor, [{"x": i} for i in range(4)]))
    finally:
        executor.close()


def test_a_worker_killed_from_outside_charges_only_the_example_it_was_running():
    executor = ProcessExecutor(2)
    try:
        assert healthy(run_batch(executor, [{"x": 1}, {"x": 2}]))
        idle = executor.worker_pids()
        os.kill(idle[0], signal.SIGKILL)  # an idle worker dies: nobody is charged
        time.sleep(0.2)
        assert healthy(run_batch(executor, [{"x": i} for i in range(4)]))

        busy_pids: list[int] = []

        def kill_the_slow_one():
            deadline = time.monotonic() + 20
            while len(busy_pids) < 2 and time.monotonic() < deadline:  # both runs under way
                busy_pids[:] = [w.pid for w in executor.workers if w.position is not None]
                time.sleep(0.05)
            os.kill(busy_pids[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_the_slow_one)
        killer.start()
        results = run_batch(executor, [{"x": 1, "do": "sleep", "seconds": 3}, {"x": 2, "do": "sleep", "seconds": 3}])
        killer.join()
        lost = [r for r in results if r.failed]
        assert len(lost) == 1 and isinstance(lost[0].output, WorkerLost) and "SIGKILL" in str(lost[0].output)
        assert lost[0].worker == f"pid {busy_pids[0]}"
    finally:
        executor.close()


def test_a_write_around_the_optimizer_in_a_worker_fails_that_run_and_retires_the_worker():
    executor = ProcessExecutor(1)
    target = MisbehavingTarget()
    try:
        results = run_batch(executor, [{"x": 1}, {"x": 2, "do": "write_around"}, {"x": 3}], target)
        assert [r.failed for r in results] == [False, True, False]
        assert results[1].error_kind == "wrote_around" and results[1].drift == ["word"]
        assert "wrote around the optimizer (word: its value changed)" in str(results[1].output)
        assert results[2].output == "hello 3"  # a fresh worker, holding what the loop set, ran the next one
        assert executor.replaced == 1 and target.word.value == "hello"  # nothing reached the driver
    finally:
        executor.close()


def test_a_run_that_kills_the_worker_template_costs_only_its_own_example():
    """All workers die with their template; the examples they held run again once, uncharged."""
    executor = ProcessExecutor(2)
    try:
        results = run_batch(
            executor, [{"x": 1, "do": "pause", "seconds": 1.0}, {"x": 2, "do": "kill_parent"}, {"x": 3}, {"x": 4}]
        )
        assert [r.failed for r in results] == [False, True, False, False], [str(r.output) for r in results]
        assert isinstance(results[1].output, WorkerLost)
        assert healthy(run_batch(executor, [{"x": i} for i in range(4)]))
        assert executor._template is not None and executor._template.alive()  # a new template
    finally:
        executor.close()


def test_the_worker_template_ignores_catchable_signals_from_a_run():
    executor = ProcessExecutor(1)
    try:
        assert healthy(run_batch(executor, [{"x": 1, "do": "term_parent"}, {"x": 2}]))
        assert executor.replaced == 0
    finally:
        executor.close()


def test_cancel_kills_the_workers_of_the_runs_in_flight():
    executor = ProcessExecutor(2)
    try:
        run_batch(executor, [{"x": 1}, {"x": 2}])
        before = executor.worker_pids()
        timer = threading.Timer(0.5, executor.cancel)
        timer.start()
        results = run_batch(executor, [{"x": 1, "do": "sleep"}, {"x": 2, "do": "sleep"}, {"x": 3}])
        assert [type(r.output).__name__ for r in results] == ["EvaluationCancelled"] * 3
        _assert_gone(before)
        assert healthy(run_batch(executor, [{"x": 4}]))
    finally:
        executor.close()


def test_workers_die_with_a_driver_that_is_killed(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys, threading
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from executor_scenarios import MisbehavingTarget, pid_feedback
        from opto_core.engine.executors.process import ProcessExecutor

        executor = ProcessExecutor(2)
        target = MisbehavingTarget()
        executor.evaluate(target, [{{"x": 1}}, {{"x": 2}}], pid_feedback, indices=[0, 1], failure_score=0.0)
        print(json.dumps(executor.worker_pids() + [executor._template.pid]), flush=True)
        executor.evaluate(target, [{{"x": 1, "do": "sleep"}}], pid_feedback, indices=[0], failure_score=0.0)
    """)
    )
    driver = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        pids = json.loads(driver.stdout.readline())
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
        driver.kill()  # SIGKILL: no cleanup code runs in the driver
        driver.wait(timeout=10)
        _assert_gone(pids)
    finally:
        driver.kill()


# ----- through the loop: suggested code -----------------------------------------------------------------
@op(trainable=True)
def double(x: float) -> float:
    """Twice x."""
    return x * 2


def _double_target():
    double.code.value = double.source  # type: ignore[union-attr]
    return FunctionTarget(lambda x: double(x), [double])


def _suggest(body: str) -> str:
    code = f"def double(x: float) -> float:\n    \"\"\"Twice x.\"\"\"\n{textwrap.indent(body, '    ')}\n"
    return json.dumps({"reasoning": "try this", "suggestion": {"double.code": code}})


def _feedback(example, output):
    return 1.0 if output == 2 * example["x"] else 0.0


@pytest.mark.parametrize(
    "isolation, executor, body",
    [
        ("none", "threads", "raise SystemExit(0)"),
        ("none", "asyncio", "raise SystemExit(0)"),
        ("none", "threads", "raise KeyboardInterrupt"),
        ("process", "threads", "raise SystemExit(0)"),
        ("process", "threads", "import os\nos._exit(0)"),
        ("process", "threads", "while True:\n    pass"),
        ("process", "asyncio", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    ],
)
def test_suggested_code_that_ends_or_hangs_its_run_is_rolled_back_and_the_run_goes_on(isolation, executor, body):
    """``code_policy="permissive"`` stands in for a policy bypass: the box must hold on its own."""
    target = _double_target()
    llm = ScriptedLLM([_suggest(body)], repeat_last=True)
    train = [{"x": float(i)} for i in range(1, 5)]
    result = optimize(
        target,
        train,
        _feedback,
        OptoPrime(target.parameters(), llm),
        train[:2],
        max_steps=2,
        batch_size=2,
        isolation=isolation,
        executor=executor,
        concurrency=2,
        eval_timeout=3.0,
        code_policy="permissive",
    )
    assert result.stopped_reason == "max_steps" and result.steps == 2
    steps = result.history[1:]
    assert [s["kept"] for s in steps] == [False, False]
    assert result.best_values["double.code"] == double.source and result.best_score == 1.0
    assert target.run({"x": 4.0})[0] == 8.0  # the live workflow holds the original code again
    if "while True" in body:  # the decision names the hang, not the infrastructure
        assert all("did not finish within eval_timeout=3 s" in s["decision"] for s in steps), steps


def test_the_default_isolation_is_process_when_the_llm_writes_code():
    from opto_core.engine.executors import make_executor
    from opto_core.engine.settings import Settings

    coded = make_executor(Settings(), _double_target())
    plain = make_executor(Settings(), FunctionTarget(lambda x: x, [Parameter("p", "text", "a")]))
    chosen = make_executor(Settings(isolation="none"), _double_target())
    try:
        assert isinstance(coded, ProcessExecutor) and isinstance(plain, ThreadExecutor)
        assert isinstance(chosen, ThreadExecutor)
    finally:
        for executor in (coded, plain, chosen):
            executor.close()
    with pytest.raises(ValueError, match="isolation must be 'auto'.*'none', 'process'"):
        Settings(isolation="jail")
    with pytest.raises(ValueError, match="cannot be combined with executor=.*an object"):
        make_executor(Settings(isolation="process", executor=ThreadExecutor(1)), _double_target())


# ----- the command line: the case, `opto demo` with a suggestion that exits or hangs -------------------
@pytest.mark.parametrize("isolation, body", [("none", "raise SystemExit(0)"), ("process", "while True:\n    pass")])
def test_opto_demo_survives_a_suggestion_that_exits_or_hangs(tmp_path, monkeypatch, isolation, body):
    from typer.testing import CliRunner

    from opto_core.app import cli
    from opto_core.app.demo import parse_price

    code = (
        f'def parse_price(line: str) -> float:\n    """Read the amount in dollars from a line such as '
        f'\'Total: $12.50\'."""\n{textwrap.indent(body, "    ")}\n'
    )
    llm = ScriptedLLM(
        [json.dumps({"reasoning": "r", "suggestion": {"invoice.parse_price.code": code}})], repeat_last=True
    )
    llm.base_url = "http://127.0.0.1:9/v1"
    monkeypatch.setattr(cli, "_client", lambda *args, **kwargs: llm)
    run_dir = tmp_path / "demo"
    result = CliRunner().invoke(
        cli.app,
        [
            "demo",
            "--workflow",
            "python",
            "--steps",
            "1",
            "--run-dir",
            str(run_dir),
            "--isolation",
            isolation,
            "--eval-timeout",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "step 1" in result.output and "reached the step limit (max_steps)" in result.output
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["best"]["invoice.parse_price.code"] == parse_price.source  # never kept
    assert json.loads((run_dir / "config.json").read_text())["isolation"] == isolation


def test_the_cli_refuses_an_unknown_isolation_level(tmp_path):
    from typer.testing import CliRunner

    from opto_core.app import cli

    result = CliRunner().invoke(
        cli.app, ["demo", "--workflow", "python", "--isolation", "jail", "--run-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 2 and "isolation must be" in result.output


@pytest.mark.parametrize("kind", ["threads", "process"])
def test_an_exit_in_suggested_code_reaches_the_optimizer_through_its_code_parameter(kind):
    """The failed op is recorded with an edge to its code parameter, so backward can tell the optimizer."""
    from opto_core.kernel.backward import backward
    from opto_core.kernel.code_policy import apply_policy

    target = _double_target()
    apply_policy(target.parameters(), "permissive")  # stands in for a policy bypass
    code = json.loads(_suggest("raise SystemExit(3)"))["suggestion"]
    target.apply(code)  # as the loop does (a worker applies the values it is sent)
    executor = make(kind, 1)
    try:
        (result,) = executor.evaluate(target, [{"x": 2.0}], _feedback, indices=[0], failure_score=0.0, values=code)
    finally:
        executor.close()
        double.code.value = double.source  # type: ignore[union-attr]
    assert result.failed and result.error_kind == "workflow" and "SystemExit(3)" in str(result.output)
    failed_op = result.graph.of_kind("exception")[0]
    assert any(edge.arg == "__code" for edge in failed_op.edges)
    problem = backward(result.graph, result.feedback)
    assert "double.code" in str(problem.variables) and "SystemExit(3)" in str(problem.outputs)


def test_opto_demo_runs_in_the_sandbox_building_the_workflow_from_its_recipe(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from opto_core.app import cli

    fix = (
        'def parse_price(line: str) -> float:\n    """Read the amount in dollars from a line such as '
        '\'Total: $12.50\'."""\n    return float(line.split("$")[1])\n'
    )
    llm = ScriptedLLM(
        [json.dumps({"reasoning": "r", "suggestion": {"invoice.parse_price.code": fix}})], repeat_last=True
    )
    llm.base_url = "http://127.0.0.1:9/v1"
    monkeypatch.setattr(cli, "_client", lambda *args, **kwargs: llm)
    run_dir = tmp_path / "demo"
    result = CliRunner().invoke(
        cli.app, ["demo", "--workflow", "python", "--steps", "1", "--run-dir", str(run_dir), "--isolation", "sandbox"]
    )
    assert result.exit_code == 0, result.output
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["best"]["invoice.parse_price.code"] == fix  # learned from runs made in the box
    again = CliRunner().invoke(cli.app, ["resume", str(run_dir), "--steps", "2"])  # the run's own isolation
    assert again.exit_code == 0, again.output
