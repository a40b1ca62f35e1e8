"""``isolation="sandbox"``: what a run can reach from inside the box, checked from outside it.

Each probe is a workflow step that tries something (write a file, read the environment, call a
model server, allocate, fork); the test looks at the result and at the file system outside the
box. The model server is a scripted OpenAI-compatible server on 127.0.0.1 (only the model is fake;
the workflow uses the real ``openai`` client). CI installs bubblewrap (``scripts/setup``); these
tests fail, not skip, without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from executor_scenarios import OneWordTarget

from opto_core import Feedback, Parameter
from opto_core.engine.executors.process import ProcessExecutor, WorkerLost
from opto_core.engine.sandbox import Facilities, Sandbox, SandboxUnavailable, _box_address, parse_endpoint, probe
from opto_core.kernel.trace import capture, op
from opto_core.testing import ScriptedServer

REPO = Path(__file__).resolve().parents[1]


# ----- probes: what a run tries from inside the box ----------------------------------------------------------
def _write(example):
    path = Path(example["path"])
    try:
        path.write_text("written from the box")
    except OSError as exc:
        return f"refused: {type(exc).__name__}: {exc.strerror}"
    return f"wrote {path}"


def _environment(example):
    return {"env": dict(os.environ), "driver_visible": os.path.exists(f"/proc/{example['driver']}"), "cwd": os.getcwd()}


def _call_model(example):
    from openai import OpenAI

    client = OpenAI(base_url=example["base_url"], api_key="inside-the-box", max_retries=0, timeout=10)
    try:
        reply = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
    except Exception as exc:  # what the workflow sees when the network is closed
        return f"unreachable: {type(exc).__name__}"
    return reply.choices[0].message.content


def _allocate(example):
    try:
        block = bytearray(example["mb"] * 1024 * 1024)
    except MemoryError:
        return "MemoryError"
    return f"allocated {len(block) // (1024 * 1024)} MB"


def _big_file(example):
    try:
        with open("big.bin", "wb") as handle:
            handle.write(b"x" * (example["mb"] * 1024 * 1024))
    except OSError as exc:
        return f"refused: {exc.strerror}"
    return "written"


def _processes(example):
    children = []
    try:
        for _ in range(example["count"]):
            children.append(subprocess.Popen(["sleep", "5"]))
    except OSError as exc:
        outcome = f"stopped after {len(children)}: {type(exc).__name__}"
    else:
        outcome = f"started {len(children)}"
    for child in children:
        child.kill()
        child.wait()
    return outcome


def _spin_cpu(example):
    while True:
        pass


PROBES = {
    "write": _write,
    "environment": _environment,
    "call_model": _call_model,
    "allocate": _allocate,
    "big_file": _big_file,
    "processes": _processes,
    "spin_cpu": _spin_cpu,
}


@op
def attempt(probe: str, example: dict) -> object:
    """Try something from inside the box."""
    return PROBES[probe](example)


class ProbeTarget(OneWordTarget):
    """A plain-Python target whose run tries what its example names (see ``PROBES``)."""

    def __init__(self):
        self.word = Parameter("word", "text", "probe")

    def run(self, example):
        with capture() as run:
            run.graph.add_parameter(self.word)
            out = attempt(run.input("probe", example["probe"]), example)
            run.mark_output(out)
        return (out.copy() if isinstance(out, dict) else str(out)), run.graph


def _feedback(example, output):
    return Feedback(1.0, "ran")


def run_in_box(examples, sandbox=None, eval_timeout=60.0, concurrency=1):
    sandbox = sandbox or Sandbox()
    executor = ProcessExecutor(concurrency, eval_timeout=eval_timeout, sandbox=sandbox)
    target = ProbeTarget()
    try:
        executor.start(target)
        return executor.evaluate(
            target, examples, _feedback, indices=list(range(len(examples))), failure_score=0.0
        ), sandbox
    finally:
        executor.close()


def test_bubblewrap_is_here():
    found = probe()
    assert found.bwrap, f"CI installs bubblewrap (scripts/setup): {found.bwrap_problem}"


# ----- files ------------------------------------------------------------------------------------------------
def test_writes_outside_the_scratch_directory_are_refused_and_inside_it_allowed(tmp_path):
    marker = f"opto-sandbox-marker-{uuid.uuid4().hex}"
    outside = [Path.home() / marker, REPO / marker, Path("/etc") / marker]
    examples = [{"probe": "write", "path": str(path)} for path in outside]
    examples.append({"probe": "write", "path": marker})  # relative: the working directory is the scratch
    results, sandbox = run_in_box(examples)
    try:
        for path, result in zip(outside, results):
            assert not path.exists(), f"the box wrote {path}"
            assert result.output.startswith("refused: OSError: Read-only file system"), result.output
        assert results[3].output.startswith("wrote ")
    finally:
        for path in outside:
            path.unlink(missing_ok=True)


def test_the_same_write_succeeds_under_process_isolation_which_confines_nothing(tmp_path):
    target = ProbeTarget()
    executor = ProcessExecutor(1)
    try:
        results = executor.evaluate(
            target, [{"probe": "write", "path": str(tmp_path / "m")}], _feedback, indices=[0], failure_score=0.0
        )
    finally:
        executor.close()
    assert results[0].output == f"wrote {tmp_path / 'm'}" and (tmp_path / "m").exists()


def test_credential_files_in_home_are_hidden(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    (home / ".netrc").write_text("machine example.com password hunter2")
    monkeypatch.setenv("HOME", str(home))
    sandbox = Sandbox()
    executor = ProcessExecutor(1, sandbox=sandbox)
    try:
        command, _, _ = (sandbox.prepare(), sandbox.wrap(["true"]))[1]
    finally:
        executor.close()
        sandbox.cleanup()
    joined = " ".join(command)
    assert f"--tmpfs {home / '.ssh'}" in joined and f"--ro-bind {os.devnull} {home / '.netrc'}" in joined


# ----- environment --------------------------------------------------------------------------------------------
def test_no_secret_of_the_environment_reaches_the_box_unless_passed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-outside-secret-0123456789")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "token-outside-secret-42")
    monkeypatch.setenv("DATABASE_URL", "postgres://app:hunter2@db.internal/app")
    driver = os.getpid()
    (plain,), sandbox = run_in_box([{"probe": "environment", "driver": driver}])
    env = plain.output["env"]
    dump = json.dumps(plain.output)
    for secret in ("sk-outside-secret", "token-outside-secret", "hunter2"):
        assert secret not in dump
    assert set(env) <= {
        "PATH",
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TERM",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "VIRTUAL_ENV",
        "HOME",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "OPTO_SANDBOX",
        "PWD",
        "OPENAI_BASE_URL",
        "OPENAI_API_BASE",
    }
    assert env["HOME"] == plain.output["cwd"] == env["TMPDIR"]
    assert not plain.output["driver_visible"]  # a PID namespace: the driver's /proc entry is not there
    (passed,), _ = run_in_box([{"probe": "environment", "driver": driver}], Sandbox(pass_env=["OPENAI_API_KEY"]))
    assert passed.output["env"]["OPENAI_API_KEY"] == "sk-outside-secret-0123456789"
    assert "MY_SERVICE_TOKEN" not in passed.output["env"]


# ----- network ----------------------------------------------------------------------------------------------
def test_the_model_endpoint_is_reachable_from_the_box_and_nothing_else():
    with (
        ScriptedServer(["hello from the model"], repeat_last=True) as allowed,
        ScriptedServer(["you should not see this"], repeat_last=True) as other,
    ):
        results, _ = run_in_box(
            [
                {"probe": "call_model", "base_url": allowed.base_url},
                {"probe": "call_model", "base_url": other.base_url},
            ],
            Sandbox(endpoints=[allowed.base_url]),
        )
        assert results[0].output == "hello from the model" and len(allowed.requests) == 1
        assert results[1].output == "unreachable: APIConnectionError" and not other.requests
        closed, _ = run_in_box([{"probe": "call_model", "base_url": allowed.base_url}], Sandbox(network="none"))
        assert closed[0].output == "unreachable: APIConnectionError" and len(allowed.requests) == 1


def test_openai_base_url_is_an_endpoint_of_the_box(monkeypatch):
    with ScriptedServer(["from the environment's endpoint"], repeat_last=True) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        results, _ = run_in_box([{"probe": "call_model", "base_url": server.base_url}])
        assert results[0].output == "from the environment's endpoint"


def test_endpoints_parse_and_names_get_loopback_addresses_of_their_own():
    assert parse_endpoint("https://api.openai.com/v1") == ("api.openai.com", 443)
    assert parse_endpoint("http://127.0.0.1:8080/v1") == ("127.0.0.1", 8080)
    assert parse_endpoint("models.internal:9000") == ("models.internal", 9000)
    names: dict[str, str] = {}
    assert _box_address("api.openai.com", names) == "127.0.0.2" and _box_address("x.test", names) == "127.0.0.3"
    assert _box_address("api.openai.com", names) == "127.0.0.2" and _box_address("127.0.0.1", names) == "127.0.0.1"
    with pytest.raises(ValueError, match="outside loopback.*host name"):
        _box_address("10.1.2.3", names)
    with pytest.raises(ValueError, match="no port"):
        parse_endpoint("ftp-host")
    with pytest.raises(ValueError, match="network"):
        Sandbox(network="internet")


# ----- resources --------------------------------------------------------------------------------------------
def test_memory_file_size_and_process_limits_hold_in_the_box():
    sandbox = Sandbox(memory_mb=512, max_file_mb=1, max_processes=8)
    results, _ = run_in_box(
        [
            {"probe": "allocate", "mb": 1024},
            {"probe": "allocate", "mb": 64},
            {"probe": "big_file", "mb": 4},
            {"probe": "processes", "count": 20},
        ],
        sandbox,
    )
    assert [r.output for r in results[:3]] == ["MemoryError", "allocated 64 MB", "refused: File too large"]
    assert results[3].output.startswith("stopped after ") and "BlockingIOError" in results[3].output
    assert int(results[3].output.split()[2].rstrip(":")) < 8


def test_a_run_over_its_cpu_seconds_is_killed_and_the_next_run_is_fine():
    results, _ = run_in_box([{"probe": "spin_cpu"}, {"probe": "allocate", "mb": 1}], Sandbox(cpu_seconds=1))
    assert results[0].failed and isinstance(results[0].output, WorkerLost) and "SIGXCPU" in str(results[0].output)
    assert results[1].output == "allocated 1 MB"


# ----- where the facilities are missing -------------------------------------------------------------------
def test_without_bubblewrap_the_sandbox_refuses_and_says_what_would_still_apply(monkeypatch):
    from opto_core.engine import sandbox as module

    bare = Facilities("linux", bwrap=None, bwrap_problem="bubblewrap is not installed", rlimits=True, root=False)
    monkeypatch.setattr(module, "probe", lambda: bare)
    with pytest.raises(
        SandboxUnavailable,
        match=r"files is missing \(bubblewrap is not installed\).*still apply: "
        r"environment.*resources.*Sandbox\(require=\(\)\).*isolation='process'",
    ):
        run_in_box([{"probe": "allocate", "mb": 1}])
    plan = Sandbox().plan(Facilities("darwin", bwrap_problem="darwin has no Linux namespaces", rlimits=True))
    assert set(plan.missing) == {"files", "network", "processes"} and set(plan.applied) == {"environment", "resources"}
    assert set(Sandbox().plan(Facilities("win32", bwrap_problem="no namespaces")).missing) == {
        "files",
        "network",
        "processes",
        "resources",
    }


def test_a_sandbox_that_may_run_partly_confined_says_so_and_still_scrubs_the_environment(monkeypatch, caplog):
    from opto_core.engine import sandbox as module

    bare = Facilities("linux", bwrap=None, bwrap_problem="bubblewrap is not installed", rlimits=True, root=False)
    monkeypatch.setattr(module, "probe", lambda: bare)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "token-outside-secret-42")
    with caplog.at_level("WARNING", logger="opto"):
        (result,), _ = run_in_box([{"probe": "environment", "driver": os.getpid()}], Sandbox(require=()))
    assert "MY_SERVICE_TOKEN" not in result.output["env"]
    said = [r.message for r in caplog.records if "layer is missing" in r.message]
    assert any("files" in m and "bubblewrap is not installed" in m for m in said)


def test_isolation_sandbox_through_optimize_and_the_cli_setting():
    from opto_core.engine.executors import make_executor
    from opto_core.engine.settings import Settings

    executor = make_executor(Settings(isolation="sandbox"), ProbeTarget())
    try:
        assert isinstance(executor, ProcessExecutor) and isinstance(executor.sandbox, Sandbox)
        assert executor.start_method == "spawn" and executor.sandbox.scratch
    finally:
        executor.close()
    assert Settings(isolation=Sandbox(memory_mb=100)).to_config()["isolation"] == "sandbox"
    with pytest.raises(ValueError, match="cannot be combined with executor='ray'"):
        make_executor(Settings(isolation="sandbox", executor="ray"), ProbeTarget())


def test_opto_demo_in_a_sandbox_this_machine_cannot_build_exits_2_with_the_reason(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from opto_core.app import cli
    from opto_core.engine import sandbox as module
    from opto_core.testing import ScriptedLLM

    bare = Facilities("linux", bwrap=None, bwrap_problem="bubblewrap is not installed", rlimits=True, root=False)
    monkeypatch.setattr(module, "probe", lambda: bare)
    llm = ScriptedLLM(['{"reasoning": "r", "suggestion": {}}'], repeat_last=True)
    llm.base_url = "http://127.0.0.1:9/v1"
    monkeypatch.setattr(cli, "_client", lambda *args, **kwargs: llm)
    result = CliRunner().invoke(
        cli.app,
        ["demo", "--workflow", "python", "--steps", "1", "--isolation", "sandbox", "--run-dir", str(tmp_path / "d")],
    )
    assert result.exit_code == 2 and "bubblewrap is not installed" in result.output
    assert not llm.requests  # nothing ran
