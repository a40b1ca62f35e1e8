"""Run directories: one process at a time, repaired after a kill at any write, never deleting what is not ours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opto_core.engine.rundir import MARKER, NotARun, RunDir, RunLocked

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_opener_gets_run_locked_with_a_clear_message(tmp_path):
    first = RunDir(tmp_path / "run")
    assert first.open(resume=True) is None
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        from opto_core.engine.rundir import RunDir, RunLocked
        try:
            RunDir({str(tmp_path / 'run')!r}).open(resume=True)
        except RunLocked as exc:
            print("locked:", exc)
        """),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "locked:" in holder.stdout and "in use by process" in holder.stdout, holder.stderr
    with pytest.raises(RunLocked):  # also a second handle in this process
        RunDir(tmp_path / "run").open(resume=True)
    first.close()
    second = RunDir(tmp_path / "run")
    second.open(resume=True)
    second.close()


def test_open_without_a_checkpoint_clears_our_partial_start(tmp_path):
    store = RunDir(tmp_path)
    (tmp_path / MARKER).write_text("{}")
    (tmp_path / "history.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "step-0.json").write_text("{}")
    (tmp_path / ".checkpoint.json.abc.tmp").write_text("half")
    (tmp_path / "notes.txt").write_text("mine")
    assert store.open(resume=True) is None
    assert not (tmp_path / "history.jsonl").exists() and not (tmp_path / "graphs").exists()
    assert not (tmp_path / ".checkpoint.json.abc.tmp").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    store.close()


def test_open_with_a_checkpoint_keeps_each_checkpointed_step_once(tmp_path):
    store = RunDir(tmp_path)
    store.open(resume=True)
    for step in range(3):
        store.append_history({"step": step, "text": "x"})
        store.write_checkpoint({"step": step, "current": {}, "best": {}})
    store.append_history({"step": 3})  # written, never checkpointed
    with open(tmp_path / "history.jsonl", "a") as handle:  # and a line cut by the kill
        handle.write('{"step": 4, "te')
    store.close()
    assert RunDir(tmp_path).open(resume=True)["step"] == 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]


def test_any_string_can_be_written_and_checkpoints_are_strict_json(tmp_path):
    store = RunDir(tmp_path)
    store.open(resume=True)
    store.append_history({"step": 0, "values": {"p": "bad \ud800 surrogate", "q": "é"}})
    assert store.read_history()[0]["values"] == {"p": "bad \ud800 surrogate", "q": "é"}
    store.write_checkpoint({"step": 0, "current": {"p": "\udfff"}, "best": {}})
    assert store.read_checkpoint()["current"]["p"] == "\udfff"
    with pytest.raises(ValueError):
        store.write_checkpoint({"step": 1, "best_score": float("nan")})
    assert store.read_checkpoint()["step"] == 0  # the good checkpoint is untouched
    store.write_graph(0, '{"v": "\ud800"}')
    json.loads((tmp_path / "graphs" / "step-0.json").read_text())
    store.close()


def test_only_a_run_of_ours_is_ever_removed(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text("print('precious')")
    assert not RunDir.is_run(project)
    with pytest.raises(NotARun, match="never deleted"):
        RunDir.remove(project)
    assert (project / "main.py").exists()
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "history.jsonl").write_text("my own log\n")
    with pytest.raises(NotARun, match="refusing to overwrite"):
        RunDir(clash).open(resume=True)
    assert (clash / "history.jsonl").read_text() == "my own log\n"
    run = RunDir(tmp_path / "run")
    run.open(resume=True)
    run.close()
    assert RunDir.is_run(tmp_path / "run") and RunDir.remove(tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----- fault injection: SIGKILL at every write point, then resume ------------------------------------------
RUN = textwrap.dedent(r'''
    import json, sys
    from opto_core import Parameter
    from opto_core.engine.loop import optimize
    from opto_core.optimizers.optoprime import OptoPrime
    from opto_core.testing import ScriptedLLM
    from opto_core.engine.target import FunctionTarget
    from opto_core.kernel.trace import op

    RATE = Parameter("rate", "float", 0.5, lower=0.0, upper=0.9)

    @op
    def discount(price: float, rate: float) -> float:
        return round(price * (1 - rate), 2)

    def workflow(price):
        return discount(price, RATE)

    NEXT = {"0.5": 0.3, "0.3": 0.2, "0.2": 0.1, "0.1": 0.15, "0.15": 0.1}

    def reply(messages):  # a function of the prompt, not of the call count: a resumed run asks the same
        import re
        current = re.search(r"\) rate=([0-9.]+)", messages[-1]["content"]).group(1)
        return json.dumps({"reasoning": "step", "suggestion": {"rate": NEXT[current]}})

    replies = [reply]
    target = FunctionTarget(workflow, [RATE], input_keys=["price"])
    data = [{"price": p} for p in (10.0, 20.0, 30.0)]
    feedback = lambda ex, out: (1.0 - abs(out - round(ex["price"] * 0.9, 2)) / ex["price"], "want 10% off")
    llm = ScriptedLLM(replies, repeat_last=True)
    result = optimize(target, data, feedback, OptoPrime(target.parameters(), llm), data, max_steps=4,
                      batch_size=2, run_dir=sys.argv[1])
    print(json.dumps({"best": result.best_values, "stopped": result.stopped_reason}))
''')


def _run(run_dir: Path, script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def test_a_kill_at_any_write_point_loses_and_duplicates_no_step(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    log = tmp_path / "writes.log"
    clean = _run(tmp_path / "clean", script, {"OPTO_RUNDIR_WRITE_LOG": str(log)})
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = json.loads(clean.stdout.strip().splitlines()[-1])
    expected_steps = [
        json.loads(line)["step"] for line in (tmp_path / "clean" / "history.jsonl").read_text().splitlines()
    ]
    points = len(log.read_text().splitlines())
    assert points > 10
    for kill_at in range(1, points + 1):
        run_dir = tmp_path / f"k{kill_at}"
        killed = _run(run_dir, script, {"OPTO_RUNDIR_KILL_AT": str(kill_at)})
        assert killed.returncode == -9, (kill_at, killed.stderr[-2000:])
        resumed = _run(run_dir, script, {})
        assert resumed.returncode == 0, (kill_at, resumed.stderr[-2000:])
        steps = [json.loads(line)["step"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
        assert steps == expected_steps, (kill_at, steps)
        # (a kill after the final checkpoint resumes as "already_finished": same values, nothing redone)
        assert json.loads(resumed.stdout.strip().splitlines()[-1])["best"] == expected["best"], kill_at
        assert not list(run_dir.glob(".*.tmp")), kill_at
