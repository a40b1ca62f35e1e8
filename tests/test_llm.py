"""`OpenAIChat` against a small fake OpenAI-compatible server started in the test.

The fake speaks real HTTP on 127.0.0.1 (so the real ``openai`` client, its HTTP library, our
retries and error handling all run); only the answers are scripted.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from opto_core.llm.client import LLMError, OpenAIChat, _transient, load_prices, price_of
from opto_core.llm.usage import ChatModel

KEY = "sk-test-SECRETKEY-1234567890abcdef"
FAST = (0.001, 0.005)  # retry_wait for tests: the backoff logic runs, without the waiting
ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTO_MODEL", "OPENAI_MODEL")


def completion(
    text: str = "ok",
    *,
    model: str = "gpt-4o-mini",
    prompt_tokens: int | None = 10,
    completion_tokens: int | None = 5,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": text}}],
    }
    if prompt_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + (completion_tokens or 0),
        }
    return body


def error(status: int, message: str, code: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "code": code}}


Reply = tuple  # (status, body) or (status, body, headers) or (status, body, headers, delay_seconds)


class FakeServer:
    """Answers each request with the next scripted reply (or a function of the request)."""

    def __init__(self) -> None:
        self.script: list[Reply | Callable[[dict[str, Any]], Reply]] = []
        self.default: Reply | Callable[[dict[str, Any]], Reply] = (200, completion())
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": json.loads(raw) if raw else None,
                }
                with fake.lock:
                    fake.requests.append(request)
                    reply = fake.script.pop(0) if fake.script else fake.default
                if callable(reply):
                    reply = reply(request)
                status, body, headers, delay = (*reply, {}, 0)[:4] if len(reply) < 4 else reply
                if delay:
                    time.sleep(delay)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def chats(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def client(server: FakeServer, **kwargs: Any) -> OpenAIChat:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("retry_wait", FAST)
    return OpenAIChat(server.base_url, KEY, **kwargs)


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


# ----- protocol, request shape ------------------------------------------------------------------
def test_is_a_chat_model_and_sends_a_plain_request(server):
    llm = client(server, temperature=0.2, max_tokens=50)
    assert isinstance(llm, ChatModel)
    server.script = [(200, completion("hello there"))]
    result = llm.chat(MESSAGES)
    assert result.text == "hello there" and not result.cached
    sent = server.chats[0]
    assert sent["json"]["model"] == "gpt-4o-mini"
    assert sent["json"]["messages"] == MESSAGES
    assert sent["json"]["temperature"] == 0.2 and sent["json"]["max_tokens"] == 50
    assert "response_format" not in sent["json"]
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"


def test_per_call_settings_override_the_defaults(server):
    llm = client(server, temperature=0.2, max_tokens=50)
    llm.chat(MESSAGES, temperature=0.9, max_tokens=7)
    assert server.chats[0]["json"]["temperature"] == 0.9 and server.chats[0]["json"]["max_tokens"] == 7


@pytest.mark.parametrize("bad", [[], "hi", [{"content": "no role"}], [{"role": "user", "content": 3}]])
def test_malformed_messages_are_refused_before_any_request(server, bad):
    with pytest.raises(ValueError, match="message"):
        client(server).chat(bad)
    assert server.requests == []


# ----- retries -------------------------------------------------------------------------------------
def test_retries_rate_limit_and_server_errors_then_succeeds(server, caplog):
    server.script = [
        error(429, "Rate limit reached"),
        error(500, "boom"),
        error(503, "overloaded"),
        (200, completion("finally")),
    ]
    llm = client(server, max_retries=4)
    with caplog.at_level(logging.WARNING, logger="opto_core.llm.client"):
        result = llm.chat(MESSAGES)
    assert result.text == "finally"
    assert len(server.chats) == 4
    assert llm.usage.calls == 1  # one logical call, four HTTP attempts
    assert sum("retry" in r.getMessage() for r in caplog.records) == 3


def test_gives_up_after_max_retries_with_a_clear_error(server):
    server.default = error(503, "overloaded")
    llm = client(server, max_retries=2)
    with pytest.raises(LLMError) as info:
        llm.chat(MESSAGES)
    assert len(server.chats) == 3
    message = str(info.value)
    assert "gave up after 3 attempts" in message and "503" in message and "overloaded" in message
    assert server.base_url in message and "gpt-4o-mini" in message
    assert info.value.status_code == 503 and llm.usage.calls == 0


def test_backoff_grows_exponentially_with_jitter(server):
    server.script = [error(500, "a"), error(500, "b"), error(500, "c"), (200, completion())]
    llm = client(server, max_retries=3, retry_wait=(0.05, 10.0))
    started = time.perf_counter()
    llm.chat(MESSAGES)
    waited = time.perf_counter() - started
    # waits: [0.025, 0.05] + [0.05, 0.1] + [0.1, 0.2] seconds, so at least 0.175 s in total
    assert 0.17 <= waited < 3.0


def test_retry_after_header_is_respected(server):
    server.script = [(429, {"error": {"message": "slow down"}}, {"retry-after": "0.3"}), (200, completion())]
    started = time.perf_counter()
    client(server).chat(MESSAGES)
    assert time.perf_counter() - started >= 0.3


def test_exhausted_quota_is_not_retried(server):
    server.default = error(429, "You exceeded your current quota", code="insufficient_quota")
    with pytest.raises(LLMError, match="quota") as info:
        client(server, max_retries=3).chat(MESSAGES)
    assert len(server.chats) == 1 and info.value.status_code == 429


def test_timeouts_are_retried(server):
    server.script = [(200, completion("late"), {}, 1.5), (200, completion("in time"))]
    result = client(server, timeout=0.3, max_retries=2).chat(MESSAGES)
    assert result.text == "in time" and len(server.chats) == 2


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAIChat(url, KEY, "gpt-4o-mini", max_retries=1, retry_wait=FAST)
    with pytest.raises(LLMError, match="gave up after 2 attempts") as info:
        llm.chat(MESSAGES)
    assert url in str(info.value)


def test_only_real_network_failures_count_as_transient():
    import httpx2
    import openai

    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    network = openai.APIConnectionError(request=request)
    network.__cause__ = httpx2.ConnectError("refused")
    programming = openai.APIConnectionError(request=request)
    programming.__cause__ = RuntimeError("request not in cassette")  # what vcrpy raises on replay
    assert _transient(network) and not _transient(programming)
    assert _transient(openai.APITimeoutError(request=request))


# ----- 4xx errors and the key ----------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried_and_name_endpoint_and_model(server, status):
    server.default = error(status, f"the server says no ({status})")
    with pytest.raises(LLMError) as info:
        client(server, max_retries=3).chat(MESSAGES)
    assert len(server.chats) == 1
    message = str(info.value)
    assert f"HTTP {status}" in message and f"the server says no ({status})" in message
    assert server.base_url in message and "'gpt-4o-mini'" in message
    assert info.value.status_code == status and info.value.model == "gpt-4o-mini"


def test_the_key_never_appears_in_errors_reprs_or_logs(server, caplog):
    # OpenAI's real 401 echoes (part of) the key; ours echoes all of it, in the body and a header.
    server.script = [error(500, f"upstream failed for Bearer {KEY}")]
    server.default = (
        401,
        {"error": {"message": f"Incorrect API key provided: {KEY}. Also sk-proj-abcdef123456."}},
        {"x-debug-key": KEY},
    )
    llm = client(server, max_retries=2)
    with caplog.at_level(logging.DEBUG, logger="opto_core"):  # our log lines (httpcore's DEBUG dumps headers)
        with pytest.raises(LLMError) as info:
            llm.chat(MESSAGES)
    err = info.value
    texts = [
        str(err),
        repr(err),
        repr(err.args),
        "".join(traceback.format_exception(err)),
        repr(llm),
        str(llm),
        json.dumps(vars(err), default=str),
        caplog.text,
    ]
    for text in texts:
        assert KEY not in text
        assert "SECRETKEY" not in text and "abcdef123456" not in text
    assert "Incorrect API key provided" in str(err) and "OPENAI_API_KEY" in str(err)


def test_credentials_in_the_base_url_are_not_shown(server):
    url = server.base_url.replace("http://", "http://user:hunter2@")
    llm = OpenAIChat(url, KEY, "m")
    assert "hunter2" not in repr(llm) and "hunter2" not in str(llm.base_url)


# ----- JSON modes -----------------------------------------------------------------------------------
def test_json_schema_is_sent_as_response_format(server):
    server.script = [(200, completion('{"answer": "yes"}'))]
    llm = client(server)
    result = llm.chat(MESSAGES, json_schema={"title": "My Answer", **SCHEMA})
    assert json.loads(result.text) == {"answer": "yes"}
    fmt = server.chats[0]["json"]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "My_Answer" and fmt["json_schema"]["schema"]["required"] == ["answer"]
    assert server.chats[0]["json"]["messages"] == MESSAGES  # no extra instruction needed
    assert llm.format_mode == "json_schema"


def test_openai_style_wrapped_schema_is_accepted(server):
    client(server).chat(MESSAGES, json_schema={"name": "wrapped", "schema": SCHEMA})
    assert server.chats[0]["json"]["response_format"]["json_schema"] == {
        "name": "wrapped",
        "schema": SCHEMA,
        "strict": False,
    }


def _refuse_formats(refused: set[str]) -> Callable[[dict[str, Any]], Reply]:
    def reply(request: dict[str, Any]) -> Reply:
        fmt = (request["json"].get("response_format") or {}).get("type")
        if fmt in refused:
            return error(400, f"response_format type must be one of \"text\", got: {fmt}")
        return 200, completion('{"answer": "fine"}')

    return reply


def test_json_falls_back_schema_to_object_to_text_and_remembers(server):
    server.default = _refuse_formats({"json_schema", "json_object"})
    llm = client(server)
    result = llm.chat(MESSAGES, json_schema=SCHEMA)
    assert result.text == '{"answer": "fine"}'
    kinds = [(r["json"].get("response_format") or {}).get("type") for r in server.chats]
    assert kinds == ["json_schema", "json_object", None]
    last = server.chats[-1]["json"]["messages"]
    assert last[0]["role"] == "system" and last[0]["content"].startswith("You are terse.")
    assert '"required": ["answer"]' in last[0]["content"] and "JSON" in last[0]["content"]
    assert llm.format_mode == "text" and llm.usage.calls == 1
    llm.chat(MESSAGES, json_schema=SCHEMA)  # remembered: straight to text
    assert len(server.chats) == 4 and "response_format" not in server.chats[-1]["json"]


def test_json_object_fallback_puts_the_schema_in_the_prompt(server):
    server.default = _refuse_formats({"json_schema"})
    llm = client(server)
    llm.chat([{"role": "user", "content": "Answer."}], json_schema=SCHEMA)
    sent = server.chats[-1]["json"]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][0]["role"] == "system" and '"answer"' in sent["messages"][0]["content"]
    assert sent["messages"][1] == {"role": "user", "content": "Answer."}
    assert llm.format_mode == "json_object"


def test_forced_json_mode_does_not_fall_back(server):
    server.default = _refuse_formats({"json_schema"})
    with pytest.raises(LLMError, match="response_format"):
        client(server, json_mode="json_schema").chat(MESSAGES, json_schema=SCHEMA)
    assert len(server.chats) == 1
    with pytest.raises(ValueError, match="json_mode"):
        OpenAIChat(server.base_url, KEY, "m", json_mode="yaml")


def test_an_unrelated_400_does_not_change_the_json_mode(server):
    server.default = error(400, "maximum context length exceeded")
    llm = client(server)
    with pytest.raises(LLMError, match="context length"):
        llm.chat(MESSAGES, json_schema=SCHEMA)
    assert len(server.chats) == 1 and llm.format_mode == "json_schema"


def test_max_completion_tokens_is_used_when_the_model_asks_for_it(server):
    def reply(request: dict[str, Any]) -> Reply:
        if "max_tokens" in request["json"]:
            return error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            )
        return 200, completion(model="o3-mini")

    server.default = reply
    llm = client(server, model="o3-mini", max_tokens=20)
    llm.chat(MESSAGES)
    llm.chat(MESSAGES)
    assert [("max_tokens" in r["json"], r["json"].get("max_completion_tokens")) for r in server.chats] == [
        (True, None),
        (False, 20),
        (False, 20),
    ]


# ----- tokens and cost --------------------------------------------------------------------------------
def test_tokens_and_cost_per_call_and_in_total(server):
    server.script = [
        (200, completion(prompt_tokens=1000, completion_tokens=500)),
        (200, completion(prompt_tokens=3000, completion_tokens=100)),
    ]
    llm = client(server)
    first, second = llm.chat(MESSAGES), llm.chat(MESSAGES)
    price_in, price_out = load_prices()["gpt-4o-mini"]
    assert (first.prompt_tokens, first.completion_tokens) == (1000, 500)
    assert first.cost_usd == pytest.approx((1000 * price_in + 500 * price_out) / 1e6)
    assert second.cost_usd == pytest.approx((3000 * price_in + 100 * price_out) / 1e6)
    assert (llm.usage.calls, llm.usage.prompt_tokens, llm.usage.completion_tokens) == (2, 4000, 600)
    assert llm.usage.cost_usd == pytest.approx(first.cost_usd + second.cost_usd)


def test_dated_snapshots_use_their_family_price_and_unknown_models_cost_none(server):
    table = load_prices()
    assert price_of("gpt-4o-mini-2024-07-18", table) == table["gpt-4o-mini"] != table["gpt-4o"]
    assert price_of("openai/gpt-4.1", table) == table["gpt-4.1"]
    assert price_of("gpt-4o-audio-preview", table) is None
    server.script = [(200, completion(model="my-finetune", prompt_tokens=100, completion_tokens=10))]
    llm = client(server, model="my-finetune")
    result = llm.chat(MESSAGES)
    assert result.cost_usd is None and result.prompt_tokens == 100
    assert llm.usage.cost_usd == 0.0 and llm.usage.prompt_tokens == 100


def test_price_table_can_be_overridden(server, tmp_path):
    server.default = (200, completion(model="my-model", prompt_tokens=2_000_000, completion_tokens=1_000_000))
    llm = client(server, model="my-model", prices={"my-model": {"input": 1.0, "output": 3.0}})
    assert llm.chat(MESSAGES).cost_usd == pytest.approx(5.0)
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o-mini": [10, 20]}))
    llm = client(server, prices=str(path))
    assert llm.chat(MESSAGES).cost_usd == pytest.approx(2 * 10 + 20)
    with pytest.raises(ValueError, match="price of 'x'"):
        load_prices({"x": {"input": 1}})


def test_tokens_are_estimated_when_the_server_sends_no_usage(server, caplog):
    server.default = (200, completion("a fairly long answer " * 10, prompt_tokens=None, finish_reason="length"))
    llm = client(server)
    with caplog.at_level(logging.WARNING, logger="opto_core.llm.client"):
        result = llm.chat([{"role": "user", "content": "word " * 200}])
    assert result.prompt_tokens > 50 and result.completion_tokens > 20
    assert llm.usage.prompt_tokens == result.prompt_tokens
    assert "cut off" in caplog.text


def test_usage_totals_are_exact_under_threads(server):
    server.default = (200, completion(prompt_tokens=7, completion_tokens=3))
    llm = client(server)
    threads = [threading.Thread(target=llm.chat, args=(MESSAGES,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (llm.usage.calls, llm.usage.prompt_tokens, llm.usage.completion_tokens) == (8, 56, 24)


# ----- cache ---------------------------------------------------------------------------------------
def test_cache_hit_on_identical_request_is_free_and_counted_separately(server, tmp_path):
    server.default = (200, completion("cached answer", prompt_tokens=1000, completion_tokens=100))
    llm = client(server, cache_dir=tmp_path)
    first = llm.chat(MESSAGES, json_schema=SCHEMA, temperature=0)
    second = llm.chat(MESSAGES, json_schema=SCHEMA, temperature=0)
    assert len(server.chats) == 1
    assert not first.cached and first.cost_usd > 0
    assert second.cached and second.text == "cached answer" and second.cost_usd == 0.0
    assert (second.prompt_tokens, second.completion_tokens) == (1000, 100)
    assert llm.usage.calls == 1 and llm.cache_hits == 1 and llm.usage.cost_usd == first.cost_usd
    # on disk: a new client (another process, another day) hits it too
    again = client(server, cache_dir=tmp_path)
    assert again.chat(MESSAGES, json_schema=SCHEMA, temperature=0).cached and len(server.chats) == 1
    assert again.usage.calls == 0 and again.cache_hits == 1


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"max_tokens": 9},
        {"json_schema": None},
        {"messages": [{"role": "user", "content": "Say bye."}]},
        {"model": "gpt-4o"},
    ],
)
def test_any_change_in_the_request_misses_the_cache(server, tmp_path, change):
    base = {"messages": MESSAGES, "json_schema": SCHEMA, "temperature": 0, "max_tokens": None}
    client(server, cache_dir=tmp_path).chat(**base)
    request = {**base, **change}
    model = request.pop("model", "gpt-4o-mini")
    result = client(server, cache_dir=tmp_path, model=model).chat(**request)
    assert not result.cached and len(server.chats) == 2


def test_cache_is_off_by_default_and_survives_a_corrupt_entry(server, tmp_path):
    llm = client(server)
    llm.chat(MESSAGES)
    llm.chat(MESSAGES)
    assert len(server.chats) == 2 and llm.cache_hits == 0
    cached = client(server, cache_dir=tmp_path)
    cached.chat(MESSAGES)
    [entry] = list(tmp_path.rglob("*.json"))
    stored = json.loads(entry.read_text())
    assert stored["request"]["messages"] == MESSAGES and KEY not in entry.read_text()
    entry.write_text("{not json")
    assert not cached.chat(MESSAGES).cached and len(server.chats) == 4


# ----- configuration ---------------------------------------------------------------------------------
def test_configuration_from_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-0000")
    monkeypatch.setenv("OPENAI_MODEL", "model-b")
    llm = OpenAIChat(retry_wait=FAST)
    assert llm.model == "model-b" and llm.base_url == server.base_url and not llm.local
    monkeypatch.setenv("OPTO_MODEL", "model-a")  # OPTO_MODEL wins over OPENAI_MODEL
    llm = OpenAIChat(retry_wait=FAST)
    llm.chat(MESSAGES)
    sent = server.chats[-1]
    assert sent["json"]["model"] == "model-a" and sent["headers"]["authorization"] == "Bearer sk-from-env-0000"
    # arguments win over the environment
    other = FakeServer()
    try:
        OpenAIChat(other.base_url, "sk-arg-1111", "model-c").chat(MESSAGES)
        assert other.chats[0]["json"]["model"] == "model-c"
        assert other.chats[0]["headers"]["authorization"] == "Bearer sk-arg-1111"
    finally:
        other.close()
    assert len(server.chats) == 1


def test_api_key_alone_means_openai_with_a_default_model(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-only-key-0000")
    llm = OpenAIChat()
    assert llm.base_url == "https://api.openai.com/v1" and llm.model == "gpt-4o-mini" and not llm.local


def test_base_url_without_model_asks_the_server(server):
    server.script = [(200, {"object": "list", "data": [{"id": "served-model", "object": "model"}]})]
    llm = OpenAIChat(server.base_url, retry_wait=FAST)  # no key, no model: a local-style server
    assert llm.model == ""
    llm.chat(MESSAGES)
    assert server.requests[0]["path"] == "/v1/models" and server.chats[0]["json"]["model"] == "served-model"
    assert llm.model == "served-model" and server.chats[0]["headers"]["authorization"] == "Bearer no-key"


def test_no_endpoint_means_the_embedded_model_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="opto_core.llm.client"):
        llm = OpenAIChat(model="gpt-4o")
    assert llm.local and llm.model == "SmolLM2-135M-Instruct"
    assert llm.base_url is None  # started lazily, on the first call, not here
    assert "embedded local model SmolLM2-135M-Instruct" in caplog.text and "'gpt-4o' ignored" in caplog.text
    assert OpenAIChat(base_url="local").local
    assert llm.timeout == 600.0  # the embedded model is slow on a busy machine; a retry restarts the work
    assert OpenAIChat("http://127.0.0.1:1/v1", model="m").timeout == 60.0
    assert OpenAIChat(model="m", timeout=5).timeout == 5.0


def test_loopback_endpoints_ignore_proxy_settings(server, monkeypatch):
    # a proxy that does not exist: any request sent through it would fail
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert client(server, max_retries=0).chat(MESSAGES).text == "ok"
    assert len(server.chats) == 1


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(server):
    """A server asking for 100000 s cannot stretch a call with a 20 s deadline: no sleep, one clear error."""
    server.default = (429, {"error": {"message": "slow down"}}, {"retry-after": "100000"})
    llm = client(server, max_retries=4, deadline=20)
    with pytest.raises(LLMError, match="Retry-After") as info:
        llm.chat(MESSAGES)
    assert len(server.chats) == 1 and "100000 s" in str(info.value) and info.value.status_code == 429


def test_retry_after_is_capped_by_the_deadline_and_without_one_by_a_minute():
    from opto_core.llm.retry_after import capped

    assert capped(None, 0.1, None) == 0.1
    assert capped(5.0, 0.1, None) == 5.0 and capped(5.0, 0.1, 10.0) == 5.0
    assert capped(100000.0, 0.1, 20.0) is None and capped(15.0, 0.1, 10.0) is None
