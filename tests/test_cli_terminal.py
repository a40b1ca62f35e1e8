"""The `opto` command in a real terminal and in a pipe: quiet logs, a live line only where it belongs.

Each test starts `opto demo` as a user would (a separate process); only the optimizer's model is fake:
a scripted OpenAI-compatible server on 127.0.0.1, reached with --base-url.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opto_core.testing import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
NO_CHANGE = json.dumps({"reasoning": "Nothing to change yet.", "suggestion": {}})


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPTO_MODEL"))}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="120", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    return env


def _command(server: ScriptedServer, run_dir: Path, *extra: str, steps: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "opto_core.app.cli",
        "demo",
        "--base-url",
        server.base_url,
        "--model",
        "scripted",
        "--steps",
        str(steps),
        "--run-dir",
        str(run_dir),
        *extra,
    ]


def _in_a_pipe(command: list[str], cwd: Path) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, text=True
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


def _in_a_terminal(command: list[str], cwd: Path) -> str:
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, cwd=cwd, env=_env(), stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(timeout=60)
    os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_the_live_line_appears_in_a_terminal_and_not_in_a_pipe(tmp_path):
    with ScriptedServer([NO_CHANGE], repeat_last=True) as server:
        piped = _in_a_pipe(_command(server, tmp_path / "a", "--workflow", "python"), tmp_path)
        terminal = _in_a_terminal(_command(server, tmp_path / "b", "--workflow", "python"), tmp_path)
    assert "\x1b" not in piped and "\r" not in piped  # plain lines, no control characters
    assert "step 1: asking the optimizer for a proposal" in piped and "start score" in piped
    assert "step 1/1" not in piped
    assert "step 1/1 · " in terminal and "\x1b[" in terminal  # the live line, redrawn in place
    assert "start score" in terminal


def test_the_autogen_demo_is_quiet_without_v_and_shows_framework_logs_with_it(tmp_path):
    pytest.importorskip("autogen_agentchat")
    with ScriptedServer([NO_CHANGE], repeat_last=True) as server:
        quiet = _in_a_pipe(_command(server, tmp_path / "q", "--workflow", "autogen"), tmp_path)
        verbose = _in_a_pipe(_command(server, tmp_path / "v", "--workflow", "autogen", "-v"), tmp_path)
    assert "Publishing message of type" not in quiet and "HTTP Request:" not in quiet
    # AutoGen's event loop runs in a thread here: the workers start fresh from the demo's recipe, not by fork
    assert "making the worker template by fork" not in quiet
    assert len(quiet.splitlines()) < 150, quiet
    assert "start score" in quiet and "stopped      after 1 of 1 step" in quiet
    # the same run with -v shows what was hidden: the test could fail
    assert "HTTP Request: POST" in verbose and "Publishing message of type" in verbose


@pytest.mark.parametrize("workflow", ["python", "langchain", "dspy"])
def test_every_demo_prints_a_short_plain_result_without_v(workflow, tmp_path):
    pytest.importorskip({"python": "opto_core", "langchain": "langchain_core", "dspy": "dspy"}[workflow])
    with ScriptedServer([NO_CHANGE], repeat_last=True) as server:
        quiet = _in_a_pipe(_command(server, tmp_path / "q", "--workflow", workflow, steps=2), tmp_path)
    lines = quiet.splitlines()
    assert len(lines) < 150, quiet
    assert "HTTP Request:" not in quiet and not [line for line in lines if line.startswith("INFO")], quiet
    assert "\x1b" not in quiet and "\r" not in quiet
    assert "start score" in quiet and "stopped      after 2 of 2 steps" in quiet
