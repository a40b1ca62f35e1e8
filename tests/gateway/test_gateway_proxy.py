"""The proxy itself: recording, runs, streaming pass-through, failures passed on unchanged, secrets kept out."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import openai
import pytest
from gateway_helpers import UPSTREAM_KEY

from opto_core.gateway.proxy import Gateway
from opto_core.gateway.recording import INFRASTRUCTURE, OPAQUE, Exchange, Recorder, load_runs
from opto_core.gateway.wire import CHAT
from opto_core.testing import tool_call


def test_calls_tool_calls_and_ids_are_recorded_in_one_run(upstream, gateway):
    upstream.script(tool_call("lookup", call_id="call_7", city="Oslo"), "It is 4 degrees in Oslo.")
    client = openai.OpenAI(base_url=gateway.base_url)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [{"role": "system", "content": "You answer weather questions."}, {"role": "user", "content": "Oslo?"}]
    with gateway.open_run("weather") as run_id:
        first = client.chat.completions.create(model="m", messages=messages, tools=tools).choices[0].message
        messages += [first.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": "call_7", "content": "4C"}]
        client.chat.completions.create(model="m", messages=messages, tools=tools)
    run = gateway.run(run_id)
    assert [e.api for e in run.exchanges] == ["chat", "chat"]
    assert run.exchanges[0].answer["tool_calls"] == [
        {"id": "call_7", "name": "lookup", "arguments": '{"city": "Oslo"}'}
    ]
    assert run.exchanges[1].answer["text"] == "It is 4 degrees in Oslo."
    graph = gateway.graph(run_id)
    (tool,) = [n for n in graph.nodes if n.op_type == "tool"]
    assert tool.value == "4C" and tool.meta["call_id"] == "call_7" and tool.meta["arguments"] == '{"city": "Oslo"}'
    second = [n for n in graph.nodes if n.op_type == "llm_call"][1]
    results = [graph[e.id] for e in second.edges if e.via == "data" and graph[e.id].name.endswith("tool_results")]
    assert results and results[0].edges[0].id == tool.id


def test_runs_are_grouped_by_path_then_header_then_window(upstream, gateway):
    upstream.script("a", "b", "c", "d")
    upstream.repeat_last = True
    with httpx.Client() as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        http.post(gateway.run_url("by-path") + "/chat/completions", json=body)
        http.post(gateway.base_url + "/chat/completions", json=body, headers={"X-Opto-Run": "by-header"})
        http.post(gateway.base_url + "/chat/completions", json=body)
        http.post(gateway.base_url + "/chat/completions", json=body)
    runs = {run.id: run for run in gateway.runs}
    assert len(runs["by-path"].exchanges) == 1 and len(runs["by-header"].exchanges) == 1
    windows = [run for run in runs.values() if run.id.startswith("w")]
    assert len(windows) == 1 and len(windows[0].exchanges) == 2  # one client, within the run gap
    # the header is the gateway's, never forwarded
    assert all("x-opto-run" not in headers for headers in upstream.headers)


def test_a_window_run_ends_after_the_gap(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("opto_core.gateway.recording.time.time", lambda: now[0])
    closed = []
    recorder = Recorder(run_gap=10.0, on_close=closed.append)
    first = recorder.run_for(None, "10.0.0.1")
    now[0] += 5
    assert recorder.run_for(None, "10.0.0.1") is first
    assert recorder.run_for(None, "10.0.0.2") is not first  # another client, another run
    now[0] += 11
    second = recorder.run_for(None, "10.0.0.1")
    assert second is not first and closed[0] is first and first.closed


def test_runs_no_owner_holds_lapse_and_idle_time_counts_from_the_last_answer(monkeypatch):
    """`opto gateway` in production: runs named by a header (or path) that no target owns close when idle,
    so their unmatched values are reported; a call in flight, or one that just ended, keeps a run open."""
    now = [1000.0]
    monkeypatch.setattr("opto_core.gateway.recording.time.time", lambda: now[0])
    closed = []
    recorder = Recorder(run_gap=10.0, on_close=closed.append)
    by_header = recorder.run_for("from-header", "10.0.0.1")
    owned = recorder.ensure("a-targets-run")  # GatewayTarget's: closed by the target only
    window = recorder.run_for(None, "10.0.0.2")
    slow = Exchange(1, window.id, CHAT, "/v1/chat/completions", now[0])
    recorder.started(slow)
    now[0] += 30  # a 30 s model call: the window stays open while it is in flight
    recorder.close_lapsed()
    assert closed == [by_header] and not owned.closed and not window.closed
    recorder.add(slow)
    now[0] += 5  # 5 s after its answer: the same run
    assert recorder.run_for(None, "10.0.0.2") is window
    now[0] += 11
    recorder.close_lapsed()
    assert closed == [by_header, window] and not owned.closed
    recorder.close_lapsed(all_windows=True)  # the gateway stops: every run no owner holds
    assert not owned.closed


def test_a_values_file_is_reported_for_header_runs_of_opto_gateway(upstream, tmp_path, caplog):
    from opto_core.gateway.parameters import TrafficParameters

    rules = TrafficParameters()
    rules.prompt("agent_1.system", "The prompt the program used to send.")
    rules.save_values(str(tmp_path / "old.json"), {"agent_1.system": "An optimized version."})
    upstream.script("ok")
    upstream.repeat_last = True
    proxy = Gateway(upstream.base_url, values=str(tmp_path / "old.json"), run_gap=0.2).start()
    try:
        with caplog.at_level(logging.WARNING, logger="opto.gateway"), httpx.Client() as http:
            for run_id in ("r1", "r2"):
                http.post(
                    proxy.base_url + "/chat/completions",
                    headers={"X-Opto-Run": run_id},
                    json={
                        "model": "m",
                        "messages": [{"role": "system", "content": "A new prompt."}, {"role": "user", "content": "q"}],
                    },
                )
            deadline = time.time() + 30
            while not proxy.run("r2").closed and time.time() < deadline:  # the janitor looks every second
                time.sleep(0.1)
    finally:
        proxy.stop()
    assert proxy.run("r1").closed and proxy.run("r2").closed
    warnings = [r.getMessage() for r in caplog.records if "matched no request" in r.getMessage()]
    assert len(warnings) == 1 and "'agent_1.system'" in warnings[0]


def test_streamed_chunks_pass_through_as_they_come(upstream, gateway):
    """The upstream holds its stream after the first text chunk until the client has seen that chunk: a
    gateway that buffered the stream would never deliver it, and the wait would time out."""
    text = "one two three four"
    upstream.script(text)
    client_saw_first = threading.Event()
    released = []

    def hold(index: int) -> None:
        if index == 1:  # the role chunk and the first half of the text are out
            released.append(client_saw_first.wait(20))

    upstream.between_chunks = hold
    client = openai.OpenAI(base_url=gateway.base_url)
    pieces = []
    with gateway.open_run("stream") as run_id:
        for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "count"}], stream=True
        ):
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                pieces.append(delta)
                client_saw_first.set()
    assert released == [True]
    assert "".join(pieces) == text
    (exchange,) = gateway.run(run_id).exchanges
    assert exchange.stream and exchange.answer["text"] == text  # assembled for the record


def test_upstream_errors_pass_through_unchanged_and_count_as_infrastructure(upstream, gateway):
    upstream.fail_with = (429, "slow down")
    with httpx.Client() as http:
        direct = http.post(upstream.base_url + "/chat/completions", json={"model": "m", "messages": []})
        proxied = http.post(gateway.run_url("fail") + "/chat/completions", json={"model": "m", "messages": []})
    assert proxied.status_code == direct.status_code == 429
    assert proxied.json() == direct.json()
    (exchange,) = gateway.run("fail").exchanges
    assert exchange.outcome == INFRASTRUCTURE and exchange.status == 429 and "slow down" in exchange.error
    graph = gateway.graph("fail")
    assert graph.meta["upstream_failures"][0]["status"] == 429
    assert [n.kind for n in graph.outputs] == ["output"] and graph[graph.outputs[0].edges[0].id].kind == "exception"


def test_an_upstream_that_does_not_answer_is_a_502_naming_it():
    proxy = Gateway("http://user:secret-in-url@127.0.0.1:9/v1").start()  # nothing listens on port 9
    try:
        with httpx.Client() as http:
            answer = http.post(proxy.run_url("down") + "/chat/completions", json={"model": "m", "messages": []})
    finally:
        proxy.stop()
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "did not answer" in message and "secret-in-url" not in message and "127.0.0.1:9" in message
    assert proxy.run("down").exchanges[0].outcome == INFRASTRUCTURE


def test_an_unparseable_request_is_forwarded_untouched_and_warned_about_once(upstream, gateway, caplog):
    upstream.script("x", "y")
    with caplog.at_level(logging.WARNING, logger="opto.gateway"), httpx.Client() as http:
        for _ in range(2):
            http.post(
                gateway.run_url("odd") + "/chat/completions",
                content=b"{not json",
                headers={"content-type": "application/json"},
            )
    assert upstream.requests == [{}, {}]  # it reached the upstream (which could not parse it either)
    assert [e.outcome for e in gateway.run("odd").exchanges] == [OPAQUE, OPAQUE]
    warnings = [r for r in caplog.records if "could not be parsed" in r.getMessage()]
    assert len(warnings) == 1
    assert gateway.graph("odd").meta["opaque_requests"] == 2


def test_other_paths_are_forwarded_and_not_recorded(upstream, gateway):
    with httpx.Client() as http:
        direct = http.get(upstream.base_url + "/models")
        proxied = http.get(gateway.base_url + "/models")
    assert proxied.status_code == direct.status_code
    assert gateway.runs == []


def test_the_upstream_key_is_never_recorded_or_logged(upstream, tmp_path, caplog):
    upstream.script("fine")
    proxy = Gateway(upstream.base_url, api_key=UPSTREAM_KEY, record_dir=str(tmp_path)).start()
    try:
        with caplog.at_level(logging.DEBUG):
            client = openai.OpenAI(base_url=proxy.run_url("secret"), api_key="program-dummy-key")
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    finally:
        proxy.stop()
    assert upstream.headers[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    recorded = (tmp_path / "secret.jsonl").read_text()
    assert json.loads(recorded)["answer"]["text"] == "fine"
    for text in (recorded, caplog.text):
        assert UPSTREAM_KEY not in text and "program-dummy-key" not in text
    (run,) = load_runs(tmp_path)
    assert run.id == "secret" and run.exchanges[0].request["messages"][0]["content"] == "hello"


def test_without_a_key_the_programs_own_authorization_is_passed_on(upstream):
    upstream.script("ok")
    proxy = Gateway(upstream.base_url).start()
    try:
        openai.OpenAI(base_url=proxy.base_url, api_key="the-programs-key").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        proxy.stop()
    assert upstream.headers[0]["authorization"] == "Bearer the-programs-key"


@pytest.mark.parametrize("upstream_url", ["", "api.openai.com/v1"])
def test_an_upstream_that_is_not_a_url_is_refused(upstream_url):
    with pytest.raises(ValueError, match="base URL"):
        Gateway(upstream_url)


def test_settle_waits_for_exchanges_in_flight():
    from opto_core.gateway.recording import Exchange

    recorder = Recorder()
    recorder.open("r")
    exchange = Exchange(1, "r", "chat", "/v1/chat/completions", 0.0)
    recorder.started(exchange)
    assert recorder.settle("r", timeout=0.01) is False
    threading.Timer(0.05, recorder.add, [exchange]).start()
    assert recorder.settle("r", timeout=10) is True
    assert recorder.get("r").exchanges == [exchange]


def test_values_that_cannot_be_applied_never_break_the_request(upstream, caplog):
    from opto_core.gateway.parameters import TrafficParameters

    class Broken(TrafficParameters):
        def rewrite(self, api, body, request):
            body["messages"] = "half-written"
            raise RuntimeError("a rule failed")

    upstream.script("fine", "fine")
    proxy = Gateway(upstream.base_url, parameters=Broken()).start()
    try:
        with caplog.at_level(logging.WARNING, logger="opto.gateway"):
            for _ in range(2):
                answer = openai.OpenAI(base_url=proxy.base_url, api_key="k").chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
                assert answer.choices[0].message.content == "fine"
    finally:
        proxy.stop()
    assert [body["messages"] for body in upstream.requests] == [[{"role": "user", "content": "hi"}]] * 2
    assert len([r for r in caplog.records if "could not be applied" in r.getMessage()]) == 1


def test_the_listening_socket_turns_nagle_off_for_every_connection(gateway):
    """Answers go out as headers then body: with Nagle's algorithm on, each would wait for the client's
    delayed ACK. asyncio turns it off on accepted connections only when the socket says it is TCP."""
    import socket

    assert gateway._socket.proto == socket.IPPROTO_TCP
    assert gateway._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
