"""Parameters found in traffic and deployed by rewriting: prompts, settings, tool descriptions, values files."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest
from gateway_helpers import system_of

from opto_core.gateway.parameters import TrafficParameters
from opto_core.gateway.proxy import Gateway
from opto_core.gateway.recording import Exchange, Run
from opto_core.gateway.wire import CHAT, RESPONSES, parse_request
from opto_core.kernel.parameters import InvalidValue
from opto_core.kernel.values import load_values


def rewritten(parameters: TrafficParameters, api: str, body: dict) -> tuple[dict, list[str]]:
    body = copy.deepcopy(body)
    result = parameters.rewrite(api, body, parse_request(api, body))
    return body, result.applied


def test_a_system_prompt_is_rewritten_in_every_place_it_can_live():
    parameters = TrafficParameters()
    parameters.prompt("bot.system", "Be brief.")
    parameters.bound.apply({"bot.system": "Be very brief."})
    chat, applied = rewritten(
        parameters,
        CHAT,
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": "x"},
            ],
        },
    )
    assert chat["messages"][0]["content"] == [{"type": "text", "text": "Be very brief."}] and applied == ["bot.system"]
    responses, _ = rewritten(parameters, RESPONSES, {"model": "m", "instructions": "Be brief.", "input": "x"})
    assert responses["instructions"] == "Be very brief." and responses["input"] == "x"
    # a message that is not the prompt, or a user message with the same text, is left alone
    other, applied = rewritten(
        parameters,
        CHAT,
        {
            "model": "m",
            "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Be brief."}],
        },
    )
    assert system_of(other) == "Be kind." and other["messages"][1]["content"] == "Be brief." and applied == []


def test_settings_and_tool_descriptions_are_rewritten_per_format():
    parameters = TrafficParameters()
    parameters.prompt("writer.system", "Write.")
    parameters.setting("max_tokens", 100, agent="writer")
    parameters.setting("model", "small", choices=["small", "large"])
    parameters.tool_description("search", "Search the web.")
    parameters.bound.apply({"writer.max_tokens": 300, "model": "large", "tool.search.description": "Search news only."})
    chat, _ = rewritten(
        parameters,
        CHAT,
        {
            "model": "small",
            "max_completion_tokens": 100,
            "messages": [{"role": "system", "content": "Write."}],
            "tools": [{"type": "function", "function": {"name": "search", "description": "Search the web."}}],
        },
    )
    assert chat["max_completion_tokens"] == 300 and "max_tokens" not in chat and chat["model"] == "large"
    assert chat["tools"][0]["function"]["description"] == "Search news only."
    responses, _ = rewritten(
        parameters,
        RESPONSES,
        {"model": "small", "instructions": "Write.", "input": "go", "tools": [{"type": "function", "name": "search"}]},
    )
    assert responses["max_output_tokens"] == 300 and responses["tools"][0]["description"] == "Search news only."
    # another agent's request: the writer's max_tokens is not its business
    other, applied = rewritten(
        parameters, CHAT, {"model": "small", "messages": [{"role": "system", "content": "Read."}]}
    )
    assert "max_tokens" not in other and applied == ["model"]


def test_values_are_validated_before_they_reach_a_request():
    parameters = TrafficParameters()
    parameters.setting("temperature", 0.2)
    parameters.setting("model", "a", choices=["a", "b"])
    with pytest.raises(InvalidValue):
        parameters.bound.apply({"temperature": 7.0})
    with pytest.raises(InvalidValue):
        parameters.bound.apply({"model": "c"})
    with pytest.raises(ValueError, match="choices"):
        parameters.setting("model", "a")
    with pytest.raises(ValueError, match="exactly one"):
        parameters.prompt("p", "text", template="{x}")


def run_of(run_id: str, *systems: str, temperature: float | None = None) -> Run:
    run = Run(run_id, 0.0)
    for k, system in enumerate(systems):
        body = {"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": "q"}]}
        if temperature is not None:
            body["temperature"] = temperature
        run.exchanges.append(Exchange(k, run_id, CHAT, "/v1/chat/completions", 0.0, request=body))
    return run


def test_propose_finds_the_prompts_that_repeat_across_runs():
    runs = [
        run_of("a", "Plan.", "Act.", temperature=0.3),
        run_of("b", "Plan.", "Act.", temperature=0.3),
        run_of("c", "Plan.", "A one-off prompt."),
    ]
    parameters = TrafficParameters()
    added = parameters.propose(runs, min_runs=2, settings=["temperature", "top_p"])
    by_name = {p.name: p.value for p in added}
    assert by_name["agent_1.system"] == "Plan." and by_name["agent_2.system"] == "Act."
    assert "A one-off prompt." not in by_name.values()
    # several agents: each its own setting, from what it sends (never sent: the API's default)
    assert by_name["agent_1.temperature"] == 0.3 and by_name["agent_2.temperature"] == 0.3
    assert by_name["agent_1.top_p"] == 1.0
    assert parameters.propose(runs, min_runs=2) == []  # nothing new the second time


def test_opto_gateway_serves_a_values_file(upstream, tmp_path, caplog):
    """`opto gateway --values best.json`: an unchanged program's requests carry the saved prompt."""
    parameters = TrafficParameters()
    parameters.prompt("agent_1.system", "You answer questions.")
    parameters.setting("temperature", 1.0)
    parameters.prompt("agent_1.user", template="Question: {question}", role="user")
    values = tmp_path / "best.json"
    parameters.save_values(
        str(values),
        {
            "agent_1.system": "You answer questions in one word.",
            "temperature": 0.1,
            "agent_1.user": "Answer this question: {question}",
        },
    )
    assert load_values(values).meta["gateway"]["agent_1.system"]["original"] == "You answer questions."

    upstream.script("Paris", "Berlin")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OPTO_UPSTREAM_API_KEY": "k-serve"}
    command = [
        sys.executable,
        "-c",
        "from opto_core.app.cli import main; main()",
        "gateway",
        "--upstream",
        upstream.base_url,
        "--port",
        "0",
        "--values",
        str(values),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        base_url = _wait_for_url(server)
        client = openai.OpenAI(base_url=base_url, api_key="dummy")
        for question in ("Capital of France?", "Capital of Germany?"):
            client.chat.completions.create(
                model="m",
                messages=[
                    {"role": "system", "content": "You answer questions."},
                    {"role": "user", "content": f"Question: {question}"},
                ],
            )
    finally:
        server.terminate()
        server.wait(30)
    assert [system_of(body) for body in upstream.requests] == ["You answer questions in one word."] * 2
    # the saved template, filled with what the unchanged program put into the old one
    assert [body["messages"][1]["content"] for body in upstream.requests] == [
        "Answer this question: Capital of France?",
        "Answer this question: Capital of Germany?",
    ]
    assert [body["temperature"] for body in upstream.requests] == [0.1, 0.1]
    assert {h["authorization"] for h in upstream.headers} == {"Bearer k-serve"}


def _wait_for_url(process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "OPENAI_BASE_URL=" in line:
            return line.split("OPENAI_BASE_URL=")[1].split()[0]
    raise AssertionError("opto gateway did not start: " + "".join(seen))


def test_a_values_file_that_no_longer_matches_is_named_once_and_requests_pass_untouched(upstream, tmp_path, caplog):
    parameters = TrafficParameters()
    parameters.prompt("agent_1.system", "The prompt the program used to send.")
    values = tmp_path / "old.json"
    parameters.save_values(str(values), {"agent_1.system": "An optimized version."})
    upstream.script("a", "b", "c")
    proxy = Gateway(upstream.base_url, values=str(values)).start()
    try:
        with caplog.at_level(logging.WARNING, logger="opto.gateway"), httpx.Client() as http:
            for run_id in ("r1", "r2"):
                with proxy.open_run(run_id):
                    http.post(
                        proxy.base_url + "/chat/completions",
                        json={
                            "model": "m",
                            "messages": [
                                {"role": "system", "content": "The program's new prompt."},
                                {"role": "user", "content": "q"},
                            ],
                        },
                    )
    finally:
        proxy.stop()
    assert [system_of(body) for body in upstream.requests] == ["The program's new prompt."] * 2
    warnings = [r.getMessage() for r in caplog.records if "matched no request" in r.getMessage()]
    assert len(warnings) == 1 and "'agent_1.system'" in warnings[0]


def test_opto_gateway_names_a_template_that_matches_nothing_once(upstream, tmp_path):
    """`opto gateway --values`: a saved template the program no longer produces is named in one warning (when
    the first run ends), and the program's requests go upstream as it sent them."""
    parameters = TrafficParameters()
    parameters.prompt("ticket.user", template="Old ticket format:\n{answer}", role="user")
    values = tmp_path / "old.json"
    parameters.save_values(str(values), {"ticket.user": "New ticket format:\n{answer}"})
    upstream.script("ok")
    upstream.repeat_last = True
    command = [
        sys.executable,
        "-c",
        "from opto_core.app.cli import main; main()",
        "gateway",
        "--upstream",
        upstream.base_url,
        "--port",
        "0",
        "--values",
        str(values),
        "--run-gap",
        "0.2",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        client = openai.OpenAI(base_url=_wait_for_url(server), api_key="dummy")
        for k in range(3):  # three window runs: more than run_gap seconds of silence between them
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"Please file a ticket:\nthe screen broke ({k})"}]
            )
            time.sleep(0.5)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert [body["messages"][0]["content"] for body in upstream.requests] == [
        f"Please file a ticket:\nthe screen broke ({k})" for k in range(3)
    ]
    warnings = [line for line in output.splitlines() if "matched no request" in line]
    assert len(warnings) == 1 and "'ticket.user'" in warnings[0] and "Old ticket format" in warnings[0], output
