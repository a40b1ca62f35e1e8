"""Run-directory integrity and plain exits: every damaged file is one `CorruptRun` naming the file and
the way out; edited or deleted history lines are detected; a full or read-only disk is one clear error and
loses nothing; a failed first write leaves no directory that is refused forever; every failure class has
its exit code and no user error shows a traceback."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from opto_core import Parameter, optimize
from opto_core.engine.executors import InfrastructureError
from opto_core.engine.rundir import CorruptRun, RunDir, RunDirUnwritable
from opto_core.engine.target import FunctionTarget
from opto_core.kernel import files
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

TRAIN = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]


@op
def scale(x: float, k: float) -> float:
    return x * k


def say(k: float) -> str:
    return json.dumps({"reasoning": "r", "suggestion": {"k": k}})


def next_k(messages) -> str:
    """Propose k + 1 from the k the prompt shows: the same answer for the same step, in any session."""
    import re

    current = float(re.search(r"\(float\) k=([-0-9.e]+)", messages[-1]["content"]).group(1))
    return say(current + 1.0)


def run(run_dir, steps=3):
    k = Parameter("k", "float", 1.0, lower=-100, upper=100)
    target = FunctionTarget(lambda x: scale(x, k), [k], input_keys=["x"])
    llm = ScriptedLLM([next_k], repeat_last=True)
    return optimize(
        target,
        TRAIN,
        lambda e, o: -abs(o - 4 * e["x"]),
        OptoPrime(target.parameters(), llm),
        max_steps=steps,
        batch_size=2,
        run_dir=str(run_dir),
    )


# ----- damaged files: one error, naming the file and the way out ---------------------------------------------
def _edit_line(path, step, change):
    lines = path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["step"] == step)
    lines[index] = change(lines[index])
    path.write_text("".join(line + "\n" for line in lines if line is not None))


DAMAGE = {
    "checkpoint is a directory": (
        "checkpoint.json",
        lambda d: (d / "checkpoint.json").unlink() or (d / "checkpoint.json").mkdir(),
    ),
    "checkpoint is not JSON": ("checkpoint.json", lambda d: (d / "checkpoint.json").write_text("{oops")),
    "checkpoint lacks a field": (
        "checkpoint.json",
        lambda d: (d / "checkpoint.json").write_text(
            json.dumps({k: v for k, v in json.loads((d / "checkpoint.json").read_text()).items() if k != "current"})
        ),
    ),
    "checkpoint field of the wrong type": (
        "checkpoint.json",
        lambda d: (d / "checkpoint.json").write_text(
            json.dumps({**json.loads((d / "checkpoint.json").read_text()), "step": "three"})
        ),
    ),
    "checkpoint value the target refuses": (
        "checkpoint.json",
        lambda d: (d / "checkpoint.json").write_text(
            json.dumps({**json.loads((d / "checkpoint.json").read_text()), "current": {"k": 1e9}})
        ),
    ),
    "history is a directory": (
        "history.jsonl",
        lambda d: (d / "history.jsonl").unlink() or (d / "history.jsonl").mkdir(),
    ),
    "history line edited": (
        "history.jsonl",
        lambda d: _edit_line(
            d / "history.jsonl", 1, lambda line: line.replace('"kind": "step"', '"kind": "step", "note": "edited"')
        ),
    ),
    "history line deleted": ("history.jsonl", lambda d: _edit_line(d / "history.jsonl", 1, lambda line: None)),
    "history last line deleted": ("history.jsonl", lambda d: _edit_line(d / "history.jsonl", 2, lambda line: None)),
    "lock is a directory": (".lock", lambda d: (d / ".lock").unlink() or (d / ".lock").mkdir()),
    "graphs is a file": ("graphs", lambda d: shutil.rmtree(d / "graphs") or (d / "graphs").write_text("x")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_file_is_one_clear_error(damage, tmp_path):
    run(tmp_path / "run", steps=2)
    name, harm = DAMAGE[damage]
    harm(tmp_path / "run")
    with pytest.raises(CorruptRun) as info:
        run(tmp_path / "run", steps=4)
    message = str(info.value)
    assert name in message and "new run directory" in message and "restore" in message, message


def test_history_written_before_the_chain_still_resumes(tmp_path):
    run(tmp_path / "run", steps=1)
    path = tmp_path / "run" / "history.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "chain"}) + "\n" for r in lines))
    checkpoint = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    checkpoint.pop("history_chain")
    (tmp_path / "run" / "checkpoint.json").write_text(json.dumps(checkpoint))
    assert run(tmp_path / "run", steps=2).steps == 2


# ----- full and read-only disks ---------------------------------------------------------------------------------
def _points(tmp_path, monkeypatch) -> int:
    log = tmp_path / "points.log"
    monkeypatch.setenv("OPTO_RUNDIR_WRITE_LOG", str(log))
    monkeypatch.setattr(files, "_WRITES", 0)
    run(tmp_path / "reference", steps=2)
    monkeypatch.delenv("OPTO_RUNDIR_WRITE_LOG")
    return len(log.read_text().splitlines())


def test_a_full_disk_at_any_write_is_one_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    reference = run(tmp_path / "plain", steps=2)
    points = _points(tmp_path, monkeypatch)
    assert points > 15
    for point in range(1, points + 1):
        run_dir = tmp_path / f"full-{point}"
        monkeypatch.setattr(files, "_WRITES", 0)
        monkeypatch.setenv("OPTO_RUNDIR_FAIL_AT", f"{point}:ENOSPC")
        with pytest.raises(RunDirUnwritable, match="the disk is full") as info:
            run(run_dir, steps=2)
        assert "Nothing saved was lost" in str(info.value)
        monkeypatch.delenv("OPTO_RUNDIR_FAIL_AT")
        resumed = run(run_dir, steps=2)  # space freed: the run resumes and ends where it would have
        assert resumed.best_values == reference.best_values and resumed.steps == 2, point
        assert [r["step"] for r in RunDir(run_dir).read_history()] == [0, 1, 2], point


def test_a_read_only_disk_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_WRITES", 0)
    monkeypatch.setenv("OPTO_RUNDIR_FAIL_AT", "1:EROFS")
    with pytest.raises(RunDirUnwritable, match="read-only"):
        run(tmp_path / "run", steps=1)


def test_a_start_that_fails_at_its_first_write_leaves_nothing_refused(tmp_path, monkeypatch):
    """With ~2 kB free the marker cannot be written: the directory must not stay behind holding only
    our lock, which made every later attempt (and --fresh) refuse it as foreign."""
    monkeypatch.setattr(files, "_WRITES", 0)
    monkeypatch.setenv("OPTO_RUNDIR_FAIL_AT", "1:ENOSPC")
    with pytest.raises(RunDirUnwritable):
        run(tmp_path / "run", steps=1)
    monkeypatch.delenv("OPTO_RUNDIR_FAIL_AT")
    assert not (tmp_path / "run").exists() or RunDir.is_run(tmp_path / "run")
    assert run(tmp_path / "run", steps=1).steps == 1
    leftover = tmp_path / "old"
    leftover.mkdir()
    (leftover / ".lock").write_text("process 1\n")  # what an earlier version left behind
    assert RunDir.is_run(leftover) and RunDir.remove(leftover) and not leftover.exists()


def test_a_full_disk_refusing_the_lock_line_twice_is_one_clear_error(tmp_path, monkeypatch):
    """On a full tmpfs the lock's one line fails at flush, and again when the file is closed: the second
    refusal must not escape as a raw OSError (a traceback, exit 1) in place of the clear error."""
    import builtins
    import errno
    import io

    real_open = builtins.open

    class Full(io.TextIOWrapper):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if str(path).endswith(".lock"):
            return Full(handle.detach(), encoding="utf-8")
        return handle

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(RunDirUnwritable, match="the disk is full"):
        RunDir(tmp_path / "run").open()
    monkeypatch.setattr(builtins, "open", real_open)
    assert not (tmp_path / "run").exists() or RunDir.is_run(tmp_path / "run")


# ----- the exits ---------------------------------------------------------------------------------------------------
@op
def unreachable(x: float, k: float) -> float:
    raise InfrastructureError("connection refused by http://127.0.0.1:9")


def test_a_target_whose_every_run_fails_as_infrastructure_ends_as_a_failure(tmp_path):
    k = Parameter("k", "float", 1.0)
    target = FunctionTarget(lambda x: unreachable(x, k), [k], input_keys=["x"])
    llm = ScriptedLLM([say(2.0)], repeat_last=True)
    result = optimize(
        target, TRAIN, lambda e, o: 0.0, OptoPrime(target.parameters(), llm), max_steps=2, run_dir=str(tmp_path / "run")
    )
    assert result.stopped_reason == "all_runs_failed" and result.failed
    assert "connection refused" in result.error and llm.requests == []


@pytest.fixture
def cli_demo(monkeypatch):
    """The CLI's demo command with the optimizer's model faked and the workflow replaced."""
    from opto_core.app import cli, demo

    monkeypatch.setattr(
        cli,
        "_client",
        lambda *a, **kw: type("LLM", (ScriptedLLM,), {"base_url": "http://x/v1"})([say(2.0)], repeat_last=True),
    )

    def use(recipe):
        monkeypatch.setattr(demo, "load_recipe", lambda name: recipe())
        return cli

    return use


def _invoke(cli, *args):
    result = CliRunner().invoke(cli.app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.output, result.exception)
    return result.exit_code, " ".join(result.output.split())


def _target(fn):
    k = Parameter("k", "float", 1.0, lower=-100, upper=100)
    return FunctionTarget(lambda x: fn(x, k), [k], input_keys=["x"])


def test_exit_codes_of_the_cli(cli_demo, tmp_path):
    from opto_core.app.exits import CORRUPT_RUN, FEEDBACK, RUN_FAILED, USAGE

    cli = cli_demo(lambda: (_target(unreachable), TRAIN, lambda e, o: 0.0, None))
    code, out = _invoke(cli, "demo", "--workflow", "python", "--steps", "1", "--run-dir", str(tmp_path / "a"))
    assert code == RUN_FAILED and "every one of the" in out, out

    def broken(example, output):
        return 1 / 0

    cli = cli_demo(lambda: (_target(scale), TRAIN, broken, None))
    code, out = _invoke(cli, "demo", "--workflow", "python", "--steps", "1", "--run-dir", str(tmp_path / "b"))
    assert code == FEEDBACK and "feedback_fn raised" in out and "ZeroDivisionError" in out, out

    cli = cli_demo(lambda: (_target(scale), TRAIN, lambda e, o: 1.0, None))
    code, out = _invoke(cli, "demo", "--workflow", "python", "--steps", "-1", "--run-dir", str(tmp_path / "c"))
    assert code == USAGE and "max_steps must be >= 0" in out, out

    code, out = _invoke(cli, "demo", "--workflow", "python", "--steps", "1", "--run-dir", str(tmp_path / "d"))
    assert code == 0, out
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    (tmp_path / "d" / "config.json").write_text(json.dumps({**config, "batch_size": "ten"}))
    code, out = _invoke(cli, "resume", str(tmp_path / "d"))
    assert code == CORRUPT_RUN and "config.json" in out and "batch_size must be a whole number" in out, out
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    (tmp_path / "d" / "checkpoint.json").write_text("{oops")
    code, out = _invoke(cli, "resume", str(tmp_path / "d"))
    assert code == CORRUPT_RUN and "checkpoint.json" in out and "not valid JSON" in out, out


def test_a_disk_full_before_anything_was_saved_exits_4_and_resume_says_to_start_again(cli_demo, tmp_path, monkeypatch):
    from opto_core.app.exits import UNWRITABLE, USAGE

    cli = cli_demo(lambda: (_target(scale), TRAIN, lambda e, o: 1.0, None))
    monkeypatch.setenv("OPTO_RUNDIR_FAIL_AT", "2:ENOSPC")  # the config: nothing of the run is saved yet
    code, out = _invoke(cli, "demo", "--workflow", "python", "--steps", "1", "--run-dir", str(tmp_path / "e"))
    assert code == UNWRITABLE and "the disk is full" in out, out
    monkeypatch.delenv("OPTO_RUNDIR_FAIL_AT")
    code, out = _invoke(cli, "resume", str(tmp_path / "e"))
    assert code == USAGE and "stopped before anything was saved" in out and "opto demo --run-dir" in out, out
    code, out = _invoke(cli, "demo", "--workflow", "python", "--steps", "1", "--run-dir", str(tmp_path / "e"))
    assert code == 0, out


def test_every_exit_code_is_in_the_readme():
    from pathlib import Path

    from opto_core.app.exits import EXIT_CODES

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in readme, code
