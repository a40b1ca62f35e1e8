"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests, examples and benchmarks.

Only the model is fake: the framework's own client (AG2's `OpenAIWrapper`, the `openai` package, ...)
sends real HTTP requests, so what the server records is exactly what a hosted model would receive
(system message, temperature, tool schemas). It imports no agent framework.

It answers ``POST /v1/chat/completions`` and ``POST /v1/responses`` (the Responses API, which the
OpenAI Agents SDK uses by default), both from the same script, and streams (server-sent events, sent
chunk by chunk) when the request says ``"stream": true``.

    with ScriptedServer(["Hello!", tool_call("add", a=1, b=2), "3"]) as server:
        llm_config = {"config_list": [{"model": "scripted", "base_url": server.base_url, "api_key": "x"}]}
        ...
    server.requests  # every request body, in order

A reply is a string (the assistant's text), a `tool_call(...)` dict, an `http_error(...)` (the
provider failing: a 500, a 429 with ``Retry-After``), or a function of the request body returning
one of those (to answer by agent, e.g. by the system message).

``ScriptedServer(context_window=2048)`` is a small llama.cpp-style server: it counts every request
(`word_tokens`), answers ``GET /props`` and ``POST /tokenize``, and refuses a request over its window
with llama.cpp's own 400.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

from opto_core.testing.doubles import quiet_http_server

Reply = str | dict[str, Any] | Callable[[dict[str, Any]], Any]
_IDS = itertools.count(1)


def tool_call(name: str, call_id: str | None = None, **arguments: Any) -> dict[str, Any]:
    """A scripted reply that asks for one tool call."""
    return {
        "tool_calls": [
            {
                "id": call_id or f"call_{next(_IDS)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ]
    }


def http_error(
    status: int, message: str = "", *, retry_after: float | str | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A scripted reply that fails the request the way a provider does: ``http_error(429, retry_after=2)``,
    ``http_error(500)``, ``http_error(529, "Overloaded")``."""
    extra = dict(headers or {})
    if retry_after is not None:
        extra["Retry-After"] = str(retry_after)
    return {"http_error": int(status), "message": message or f"scripted HTTP {status}", "headers": extra}


_WORDS = re.compile(r"\w+|[^\w\s]")


def word_tokens(text: str) -> int:
    """A stand-in tokenizer: every word and every punctuation mark is one token (about as dense as a
    small model's vocabulary on code, denser than ``characters / 3.5``)."""
    return len(_WORDS.findall(text))


def system_text(request: dict[str, Any]) -> str:
    """The system message of a recorded request ("" when it has none)."""
    first = request["messages"][0] if request.get("messages") else {}
    return first.get("content") or "" if first.get("role") == "system" else ""


class ScriptedServer:
    """Serve ``replies`` in order at ``POST /v1/chat/completions`` and ``/v1/responses``; record every
    request body (``requests``), its path (``paths``) and its headers (``headers``).

    When the script runs out the server answers HTTP 500 (a test that makes more calls than it
    planned fails), unless ``repeat_last``. ``fail_with`` (status, message) makes every request fail.
    ``between_chunks`` (a function of the chunk index) runs after each streamed chunk is sent, before
    the next one: a test can hold the stream there to check that a proxy passes chunks on as they come.

    ``context_window`` makes it a small llama.cpp-style server: it counts each chat request's tokens
    with ``tokenizer`` (default `word_tokens`; 4 more per message; every count in ``prompt_tokens``),
    answers ``GET /props`` (its ``n_ctx``) and ``POST /tokenize``, and refuses a request whose prompt
    plus ``max_tokens`` exceeds the window with llama.cpp's own 400.
    """

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        repeat_last: bool = False,
        model: str = "scripted",
        context_window: int | None = None,
        tokenizer: Callable[[str], int] = word_tokens,
    ) -> None:
        self.replies = list(replies)
        self.context_window = context_window
        self.tokenizer = tokenizer
        self.prompt_tokens: list[int] = []
        self.repeat_last = repeat_last
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.raw_requests: list[bytes] = []  # the bodies of the same requests, byte for byte as they arrived
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []  # each request's headers (lower-case names)
        self.between_chunks: Callable[[int], None] | None = None
        self.fail_with: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle ----------------------------------------------------------------------------
    def start(self, port: int = 0) -> ScriptedServer:
        """Serve on 127.0.0.1:``port`` (0, the default: any free port, as tests must)."""
        self._server = quiet_http_server(_handler(self), port)
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
        return {
            "config_list": [{"model": self.model, "base_url": self.base_url, "api_key": "scripted"}],
            "cache_seed": None,
            **settings,
        }

    def script(self, *replies: Reply) -> None:
        """Append replies (the next requests get them)."""
        with self._lock:
            self.replies.extend(replies)

    # ----- answering ----------------------------------------------------------------------------
    def answer(self, body: dict[str, Any], path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
        """The status and JSON answer to one request, in the format of its endpoint (not streamed)."""
        return self._respond(body, path, _responses_body, _chat_body)[:2]

    def stream(self, body: dict[str, Any], path: str) -> tuple[int, Any]:
        """The status and, on success, the server-sent events of one streamed answer (a list of bytes)."""
        return self._respond(body, path, _responses_events, _chat_events)[:2]

    def _respond(
        self, body: dict[str, Any], path: str, responses: Callable[..., Any], chat: Callable[..., Any]
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, answer, extra response headers) for one request."""
        status, reply, index = self._next(body, path)
        if status != 200:
            headers = reply.pop("headers", {}) if isinstance(reply, dict) else {}
            return status, reply, headers
        answer = (responses if path.endswith("/responses") else chat)(body, reply, index, self.model)
        if self.context_window is not None and isinstance(answer, dict) and "prompt_tokens" in answer.get("usage", {}):
            answer["usage"]["prompt_tokens"] = self.prompt_tokens[index]  # the server's own count
            answer["usage"]["total_tokens"] = self.prompt_tokens[index] + answer["usage"]["completion_tokens"]
        return 200, answer, {}

    def _next(self, body: dict[str, Any], path: str) -> tuple[int, Any, int]:
        """Record the request and pick its scripted reply: (200, reply, index) or (status, error body, index)."""
        counted = sum(
            self.tokenizer(str(m.get("content") or "")) + 4 for m in body.get("messages") or [] if isinstance(m, dict)
        )
        with self._lock:
            self.requests.append(body)
            self.paths.append(path)
            self.prompt_tokens.append(counted)
            index = len(self.requests) - 1
            asked = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
            if self.context_window is not None and counted + asked > self.context_window:
                return (
                    400,
                    {
                        "error": {
                            "code": 400,
                            "type": "exceed_context_size_error",
                            "message": (
                                f"request ({counted + asked} tokens) exceeds the available context size "
                                f"({self.context_window} tokens), try increasing it"
                            ),
                        }
                    },
                    index,
                )
            if self.fail_with is not None:
                status, error_text = self.fail_with
                return status, {"error": {"message": error_text, "type": "scripted_error", "code": str(status)}}, index
            if index < len(self.replies):
                reply = self.replies[index]
            elif self.repeat_last and self.replies:
                reply = self.replies[-1]
            else:
                return (
                    500,
                    {
                        "error": {
                            "message": f"no reply scripted for request {index + 1}",
                            "type": "scripted_error",
                            "code": "500",
                        }
                    },
                    index,
                )
        if callable(reply):
            reply = reply(body)
        if isinstance(reply, dict) and "http_error" in reply:
            status = reply["http_error"]
            return (
                status,
                {
                    "error": {"message": reply["message"], "type": "scripted_error", "code": str(status)},
                    "headers": dict(reply["headers"]),
                },
                index,
            )
        return 200, reply, index


def _tokens(body: dict[str, Any], reply: Any) -> tuple[int, int]:
    """Rough token counts (characters / 4) of a request and a reply, for the usage block."""
    items = body.get("messages") or body.get("input") or []
    items = [{"content": items}] if isinstance(items, str) else items
    prompt = sum(len(str(m.get("content") or "") if isinstance(m, dict) else "") for m in items) // 4 + 1
    completion = len(str(reply) if isinstance(reply, str) else json.dumps(reply.get("tool_calls"))) // 4 + 1
    return prompt, completion


def _chat_body(body: dict[str, Any], reply: Any, index: int, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if isinstance(reply, dict):
        message["tool_calls"] = reply["tool_calls"]
        finish = "tool_calls"
    else:
        message["content"] = str(reply)
        finish = "stop"
    prompt, completion = _tokens(body, reply)
    return {
        "id": f"chatcmpl-{index + 1}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", model),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def _responses_body(body: dict[str, Any], reply: Any, index: int, model: str) -> dict[str, Any]:
    if isinstance(reply, dict):
        output = [
            {
                "type": "function_call",
                "id": f"fc_{index + 1}_{k}",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
            for k, call in enumerate(reply["tool_calls"])
        ]
    else:
        output = [
            {
                "type": "message",
                "id": f"msg_{index + 1}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": str(reply), "annotations": []}],
            }
        ]
    prompt, completion = _tokens(body, reply)
    return {
        "id": f"resp_{index + 1}",
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": body.get("model", model),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "instructions": body.get("instructions"),
        "usage": {
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n").encode()


def _chat_events(body: dict[str, Any], reply: Any, index: int, model: str) -> list[bytes]:
    """A chat completion as chunks: the role, the text in two pieces (or the tool calls), the finish, usage."""
    full = _chat_body(body, reply, index, model)
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": 0, "model": full["model"]}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""})]
    message = full["choices"][0]["message"]
    if message.get("tool_calls"):
        for k, call in enumerate(message["tool_calls"]):
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": k,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            events.append(
                chunk({"tool_calls": [{"index": k, "function": {"arguments": call["function"]["arguments"]}}]})
            )
    else:
        text = message["content"]
        half = len(text) // 2
        events += [chunk({"content": text[:half]}), chunk({"content": text[half:]})]
    events.append(chunk({}, full["choices"][0]["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(_sse({**base, "choices": [], "usage": full["usage"]}))
    events.append(_sse("[DONE]"))
    return events


def _responses_events(body: dict[str, Any], reply: Any, index: int, model: str) -> list[bytes]:
    """A Responses API answer as its event stream: created, text deltas (or items), completed."""
    full = _responses_body(body, reply, index, model)
    started = {**full, "status": "in_progress", "output": []}
    events = [_sse({"type": "response.created", "response": started, "sequence_number": 0}, "response.created")]
    seq = 1
    for position, item in enumerate(full["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            half = len(text) // 2
            for piece in (text[:half], text[half:]):
                events.append(
                    _sse(
                        {
                            "type": "response.output_text.delta",
                            "item_id": item["id"],
                            "output_index": position,
                            "content_index": 0,
                            "delta": piece,
                            "sequence_number": seq,
                            "logprobs": [],
                        },
                        "response.output_text.delta",
                    )
                )
                seq += 1
        events.append(
            _sse(
                {"type": "response.output_item.done", "output_index": position, "item": item, "sequence_number": seq},
                "response.output_item.done",
            )
        )
        seq += 1
    events.append(_sse({"type": "response.completed", "response": full, "sequence_number": seq}, "response.completed"))
    return events


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes: without TCP_NODELAY each answer would wait for the
        # client's delayed ACK (tens of milliseconds on loopback)
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path == "/props" and server.context_window is not None:  # llama.cpp's server info
                self.send_json(200, {"default_generation_settings": {"n_ctx": server.context_window}, "total_slots": 1})
            else:
                self.send_json(404, {"error": {"message": f"unknown path {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            path = self.path.split("?", 1)[0]
            if path == "/tokenize" and server.context_window is not None:
                count = server.tokenizer(str(body.get("content") or "")) if isinstance(body, dict) else 0
                self.send_json(200, {"tokens": list(range(count))})
                return
            with server._lock:
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if path.endswith(("/chat/completions", "/responses")):
                    server.raw_requests.append(raw)
            if not path.endswith(("/chat/completions", "/responses")):
                self.send_json(404, {"error": {"message": f"unknown path {self.path}"}})
            elif isinstance(body, dict) and body.get("stream"):
                status, events, headers = server._respond(body, path, _responses_events, _chat_events)
                if status != 200:
                    self.send_json(status, events, headers)
                else:
                    self.send_events(events)
            else:
                self.send_json(
                    *server._respond(body if isinstance(body, dict) else {}, path, _responses_body, _chat_body)
                )

        def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def send_events(self, events: list[bytes]) -> None:
            """Server-sent events in HTTP/1.1 chunks, flushed one by one."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for position, event in enumerate(events):
                self.wfile.write(f"{len(event):X}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                if server.between_chunks is not None:
                    server.between_chunks(position)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
