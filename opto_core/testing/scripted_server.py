"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests, examples and benchmarks.

Only the model is fake: the framework's own client (AG2's `OpenAIWrapper`, the `openai` package, ...)
sends real HTTP requests, so what the server records is exactly what a hosted model would receive
(system message, temperature, tool schemas). It imports no agent framework.

    with ScriptedServer(["Hello!", tool_call("add", a=1, b=2), "3"]) as server:
        llm_config = {"config_list": [{"model": "scripted", "base_url": server.base_url, "api_key": "x"}]}
        ...
    server.requests  # every request body, in order

A reply is a string (the assistant's text), a `tool_call(...)` dict, or a function of the
request body returning one of those (to answer by agent, e.g. by the system message).
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

from opto_core.testing.doubles import quiet_http_server

Reply = str | dict[str, Any] | Callable[[dict[str, Any]], Any]
_IDS = itertools.count(1)


def tool_call(name: str, call_id: str | None = None, **arguments: Any) -> dict[str, Any]:
    """A scripted reply that asks for one tool call."""
    return {"tool_calls": [{"id": call_id or f"call_{next(_IDS)}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)}}]}


def system_text(request: dict[str, Any]) -> str:
    """The system message of a recorded request ("" when it has none)."""
    first = request["messages"][0] if request.get("messages") else {}
    return first.get("content") or "" if first.get("role") == "system" else ""


class ScriptedServer:
    """Serve ``replies`` in order at ``POST /v1/chat/completions``; record every request body.

    When the script runs out the server answers HTTP 500 (a test that makes more calls than it
    planned fails), unless ``repeat_last``. ``fail_with`` (status, message) makes every request fail.
    """

    def __init__(self, replies: Sequence[Reply] = (), *, repeat_last: bool = False, model: str = "scripted") -> None:
        self.replies = list(replies)
        self.repeat_last = repeat_last
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.fail_with: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        self._server = quiet_http_server(_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def llm_config(self, **settings: Any) -> dict[str, Any]:
        """An AG2 ``llm_config`` pointing at this server (disk cache off)."""
        return {"config_list": [{"model": self.model, "base_url": self.base_url, "api_key": "scripted"}],
                "cache_seed": None, **settings}

    def script(self, *replies: Reply) -> None:
        """Append replies (the next requests get them)."""
        with self._lock:
            self.replies.extend(replies)

    # ----- answering ----------------------------------------------------------------------------
    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            index = len(self.requests) - 1
            if self.fail_with is not None:
                status, error_text = self.fail_with
                return status, {"error": {"message": error_text, "type": "scripted_error", "code": str(status)}}
            if index < len(self.replies):
                reply = self.replies[index]
            elif self.repeat_last and self.replies:
                reply = self.replies[-1]
            else:
                return 500, {"error": {"message": f"no reply scripted for request {index + 1}",
                                       "type": "scripted_error", "code": "500"}}
        if callable(reply):
            reply = reply(body)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(reply, dict):
            message["tool_calls"] = reply["tool_calls"]
            finish = "tool_calls"
        else:
            message["content"] = str(reply)
            finish = "stop"
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        completion = len(str(message["content"] or json.dumps(message.get("tool_calls")))) // 4 + 1
        return 200, {"id": f"chatcmpl-{index + 1}", "object": "chat.completion", "created": 0,
                     "model": body.get("model", self.model),
                     "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}}


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = {}
            status, payload = server.answer(body) if self.path.endswith("/chat/completions") else \
                (404, {"error": {"message": f"unknown path {self.path}"}})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
