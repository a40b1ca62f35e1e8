"""The way to production: save optimized values, build the team afresh (in a new process), apply
them, run it; and ``dump_component()``/``load_component()`` keep every optimized value, temperature
included. The real ``OpenAIChatCompletionClient`` talks to a scripted server on 127.0.0.1; the
requests it received are the evidence."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_helpers import ScriptedOpenAIServer, completion_body, system_of

from opto_adapters.autogen import apply_values, wrap_team
from opto_core import load_values
from opto_core.kernel.binding import UnknownParameters
from opto_core.kernel.values import ValuesFileError

pytest.importorskip("autogen_ext.models.openai")
ROOT = Path(__file__).resolve().parents[2]

APP = '''
"""A user's team, built the same way in the optimizing process and in production."""
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient

INFO = {"function_calling": True, "vision": False, "json_output": False, "family": "unknown",
        "structured_output": False}


def shout(text: str) -> str:
    """Repeat a text loudly."""
    return text


def build(base_url: str) -> RoundRobinGroupChat:
    client = OpenAIChatCompletionClient(model="scripted-model", base_url=base_url, api_key="fake-test-key-not-a-secret",
                                        model_info=INFO, temperature=0.7, max_retries=0)
    writer = AssistantAgent("writer", client, tools=[shout], reflect_on_tool_use=True,
                            system_message="You write.")
    critic = AssistantAgent("critic", client, system_message="You judge.")
    return RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))
'''

NEW_SHOUT = '''def shout(text: str) -> str:
    """Repeat a text loudly."""
    return "SHOUTED " + text.upper()
'''
OPTIMIZED = {
    "writer.system_message": "You write, and you always use shout first.",
    "writer.tools.shout.code": NEW_SHOUT,
    "writer.temperature": 0.15,
    "critic.system_message": "You judge harshly.",
}


def _reply(body):
    """The writer calls its tool once, then answers; the critic answers."""
    if (
        (system_of(body) or "").startswith("You write")
        and body.get("tools")
        and not any(m["role"] == "tool" for m in body["messages"])
    ):
        return completion_body(tool_calls=[{"id": "call_1", "name": "shout", "arguments": {"text": "sea"}}])
    return completion_body("done")


@pytest.fixture
def server():
    fake = ScriptedOpenAIServer(_reply)
    yield fake
    fake.close()


@pytest.fixture
def app(tmp_path, monkeypatch):
    (tmp_path / "deploy_app.py").write_text(textwrap.dedent(APP))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.spec_from_file_location("deploy_app", tmp_path / "deploy_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_carries_every_value(requests):
    writer = [r for r in requests if (system_of(r) or "").startswith("You write")]
    critic = [r for r in requests if system_of(r) == OPTIMIZED["critic.system_message"]]
    assert writer and critic, [system_of(r) for r in requests]
    assert system_of(writer[0]) == OPTIMIZED["writer.system_message"]
    assert all(r["temperature"] == 0.15 for r in writer) and all(r["temperature"] == 0.7 for r in critic)
    tool_results = [m["content"] for r in writer for m in r["messages"] if m["role"] == "tool"]
    assert tool_results == ["SHOUTED SEA"]  # the saved tool code ran


def test_saved_values_reach_the_next_requests_in_a_fresh_process(server, app, tmp_path):
    target = wrap_team(app.build(server.base_url))
    target.apply(OPTIMIZED)
    path = target.save_values(tmp_path / "values.json", score=1.0)
    saved = load_values(path)
    assert saved.items() >= OPTIMIZED.items() and saved["critic.temperature"] == 0.7  # every trainable value
    assert saved.meta["framework"] == "autogen-agentchat" and saved.meta["score"] == 1.0
    assert "sk-test" not in path.read_text()

    script = textwrap.dedent(f'''
        import asyncio, json, sys
        from deploy_app import build
        from opto_adapters.autogen import apply_values
        team = build({server.base_url!r})
        applied = apply_values(team, {str(path)!r})
        result = asyncio.run(team.run(task="Describe the sea."))
        print(json.dumps({{"applied": sorted(applied), "messages": len(result.messages)}}))
    ''')
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["applied"] == sorted(saved)
    assert len(server.requests) == 3  # writer (tool call), writer (reflection), critic
    _assert_carries_every_value(server.requests)
    assert "Event loop is closed" not in done.stderr


def test_apply_values_twice_in_one_process_and_bad_input(server, app, tmp_path):
    team = app.build(server.base_url)
    assert apply_values(team, OPTIMIZED) == OPTIMIZED
    assert apply_values(team, OPTIMIZED) == OPTIMIZED  # idempotent
    asyncio.run(team.run(task="Describe the sea."))
    _assert_carries_every_value(server.requests)

    fresh = app.build(server.base_url)
    with pytest.raises(UnknownParameters, match="writer.system_message"):  # lists the real names
        apply_values(fresh, {"writer.system_message": "x", "editor.system_message": "y"})
    assert fresh._participants[0].agent._system_messages[0].content == "You write."  # nothing written
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "opto-values/1", "values": {}, "meta": {"framework": "dspy"}}))
    with pytest.raises(ValuesFileError, match="dspy.*autogen-agentchat"):
        apply_values(fresh, other)
    with pytest.raises(TypeError, match="AssistantAgent, team"):
        apply_values(object(), {})


def test_dump_component_keeps_the_optimized_temperature(server, app):
    team = app.build(server.base_url)
    target = wrap_team(team)
    target.apply(OPTIMIZED)
    config = team.dump_component()
    writer_client = config.config["participants"][0]["config"]["model_client"]["config"]
    critic_client = config.config["participants"][1]["config"]["model_client"]["config"]
    assert writer_client["temperature"] == 0.15 and critic_client["temperature"] == 0.7  # each its own
    with pytest.warns(UserWarning, match="SECURITY WARNING"):  # AgentChat execs saved tool code on load
        loaded = RoundRobinGroupChat.load_component(config)
    for participant in loaded._participants:  # the API key comes back masked from a dump
        participant._model_client = type(participant._model_client)(
            **{**participant._model_client._raw_config, "api_key": "fake-test-key-not-a-secret"}
        )
    asyncio.run(loaded.run(task="Describe the sea."))
    _assert_carries_every_value(server.requests)
