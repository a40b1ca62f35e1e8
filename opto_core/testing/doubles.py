"""Test doubles that fake only the model: a scripted chat model for unit tests and examples."""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from opto_core.kernel.tokens import count_tokens
from opto_core.llm.usage import ChatResult, Usage

Reply = str | Callable[[list[dict[str, str]]], str]


class ScriptedLLM:
    """A `ChatModel` that answers from a script and records every request.

    Each reply is a string or a function of the messages. When the script runs out, it raises
    (a test that makes more calls than it planned should fail), unless ``repeat_last``.
    Token counts use the same estimate as the renderer, so budgets can be tested.
    """

    def __init__(
        self,
        replies: Sequence[Reply],
        *,
        model: str = "scripted",
        repeat_last: bool = False,
        cost_per_call: float | None = None,
    ) -> None:
        self.replies = list(replies)
        self.model = model
        self.repeat_last = repeat_last
        self.cost_per_call = cost_per_call
        self.usage = Usage()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        with self._lock:
            self.requests.append(
                {
                    "messages": [dict(m) for m in messages],
                    "json_schema": json_schema,
                    "temperature": temperature,
                    "max_tokens": max_tokens,
                }
            )
            index = len(self.requests) - 1
            if index >= len(self.replies):
                if not (self.repeat_last and self.replies):
                    raise RuntimeError(f"ScriptedLLM: no reply scripted for call {index + 1}")
                index = len(self.replies) - 1
            reply = self.replies[index]
        text = reply(messages) if callable(reply) else reply
        result = ChatResult(
            text, sum(count_tokens(m["content"]) for m in messages), count_tokens(text), self.cost_per_call, self.model
        )
        self.usage.add(result)
        return result


def quiet_http_server(handler: Any, port: int = 0) -> Any:
    """A threading HTTP server on 127.0.0.1 (``port``; 0: any free port) for scripted model servers in tests.

    A client that drops a kept-alive connection (an HTTP client pool closed when its owner is
    rebuilt or collected) is normal for such a server; the standard library would print a traceback
    to stderr for it, and tests that check stderr for errors of the code under test would see it.
    Other errors are reported as usual.
    """
    import sys
    from http.server import ThreadingHTTPServer

    class QuietServer(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                super().handle_error(request, client_address)

    return QuietServer(("127.0.0.1", port), handler)
