"""Small context windows work: the answer reserve fits the step, tokens are counted where the server can say.

The 2,048-token case runs the LangChain demo's optimization against a scripted llama.cpp-style server that
counts every request and refuses one over its window, and (live) against the embedded model at n_ctx 2048.
"""

from __future__ import annotations

import json
import os

import pytest

from opto_core import Parameter
from opto_core.engine.loop import optimize
from opto_core.llm.client import OpenAIChat
from opto_core.llm.window import MAX_ANSWER_TOKENS, MIN_ANSWER_TOKENS, answer_reserve, tiktoken_counter
from opto_core.testing import ScriptedServer
from opto_core.testing.scripted_server import word_tokens

live = pytest.mark.skipif(os.environ.get("OPTO_LIVE_TESTS") != "1", reason="set OPTO_LIVE_TESTS=1 to start llama.cpp")
NO_CHANGE = json.dumps({"reasoning": "Keep the values.", "suggestion": {}})


def test_the_answer_reserve_follows_what_the_step_may_answer():
    one_number = [Parameter("t", "float", 0.5, lower=0, upper=1)]
    assert answer_reserve(one_number)[0] == MIN_ANSWER_TOKENS
    tool = "def f(x: int) -> int:\n    '''Add one.'''\n" + "    x = x + 1\n" * 40 + "    return x\n"
    tools = [Parameter(f"tools.t{i}.code", "code", tool) for i in range(3)]
    big, why = answer_reserve(tools + one_number)
    assert big > 3 * 150 and "1 number or choice, 3 code" in why
    assert answer_reserve(tools * 20)[0] == MAX_ANSWER_TOKENS
    assert answer_reserve(tools, window=2048)[0] == int(2048 * 0.4)  # never most of a small window
    frozen = [Parameter("tools.x.code", "code", tool, trainable=False)]
    assert answer_reserve(frozen)[0] == MIN_ANSWER_TOKENS  # only what the step may change counts


def test_the_client_counts_with_the_server_where_it_can_and_estimates_elsewhere(tmp_path, monkeypatch):
    text = "def add(a, b):\n    return a + b  # the sum"
    with ScriptedServer([NO_CHANGE], context_window=2048) as counting:
        assert OpenAIChat(counting.base_url, "k", "scripted").count_tokens(text) == word_tokens(text)
    with ScriptedServer([NO_CHANGE]) as plain:  # no /tokenize: nobody can say
        assert OpenAIChat(plain.base_url, "k", "scripted").count_tokens(text) is None
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # tiktoken's file not on disk: never downloaded
    assert tiktoken_counter("gpt-4o-mini") is None


def _langchain_demo():
    pytest.importorskip("langchain_core")
    from opto_adapters.langchain.demo import build_demo
    from opto_core.app.cli import _optimizer_for

    target, trainset, feedback, _ = build_demo()
    return target, trainset, feedback, _optimizer_for


def test_the_langchain_demo_runs_its_steps_against_a_2048_token_server_without_a_request_over_it():
    target, trainset, feedback, optimizer_for = _langchain_demo()
    with ScriptedServer([NO_CHANGE], repeat_last=True, context_window=2048) as server:
        llm = OpenAIChat(server.base_url, "k", "scripted", context_window=2048, max_retries=0)
        result = optimize(target, trainset, feedback, optimizer_for(target, llm), max_steps=2, batch_size=2)
    assert result.stopped_reason == "max_steps" and result.steps == 2, result.error
    sent = [tokens + int(body.get("max_tokens") or 0) for tokens, body in zip(server.prompt_tokens, server.requests)]
    assert sent and max(sent) <= 2048, sent  # no request over the window (the server would have said 400)
    for record in result.history[1:]:
        budget = record["proposal"]["budget"]
        assert not record["proposal"]["error"] and budget["window"] == 2048 and budget["counted"] == "exact"
        assert budget["answer_tokens"] < 600  # sized for this step (a temperature, a prompt, a tool)


def test_the_same_server_refuses_what_the_old_fixed_reserve_asked_for():
    """The test could fail: the counting server really refuses a request over its window."""
    with ScriptedServer([NO_CHANGE], context_window=100) as server:
        llm = OpenAIChat(server.base_url, "k", "scripted", max_retries=0)
        from opto_core.llm.client import ContextWindowExceeded

        with pytest.raises(ContextWindowExceeded) as refused:
            llm.chat([{"role": "user", "content": "word " * 90}], max_tokens=50)
    assert refused.value.window == 100


@live
def test_the_langchain_demo_fits_the_embedded_model_at_n_ctx_2048(tmp_path):
    """In a process of its own, as a user runs it: the embedded server starts with n_ctx 2048."""
    import subprocess
    import sys
    from pathlib import Path

    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPTO_MODEL", "OPTO_CONTEXT"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "opto_core.app.cli",
            "demo",
            "--workflow",
            "langchain",
            "--context-window",
            "2048",
            "--steps",
            "1",
            "--run-dir",
            str(run_dir),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    step = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()][1]
    budget, usage = step["proposal"]["budget"], step["proposal"]["usage"]
    assert budget["window"] == 2048 and budget["counted"] == "exact"  # the embedded server's /tokenize
    assert usage["calls"] >= 1 and "exceeds the available context" not in json.dumps(step)
    # the server's own count of each prompt, plus the answer asked for, stayed within the window
    assert usage["prompt_tokens"] / usage["calls"] + budget["answer_tokens"] <= 2048
