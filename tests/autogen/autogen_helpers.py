"""Building blocks for the AutoGen adapter tests (imported by the test modules)."""

from __future__ import annotations

import json
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

from opto_core.testing import quiet_http_server

#: Scripted tool calls need a client that says it can call functions (the replay default is False).
MODEL_INFO = {
    "function_calling": True,
    "vision": False,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def tool_call(name: str, call_id: str = "call_1", **arguments: Any) -> CreateResult:
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments))],
        usage=RequestUsage(prompt_tokens=10, completion_tokens=5),
        cached=False,
    )


def replay(*responses: Any) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(responses), model_info=MODEL_INFO)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def buggy_add(a: int, b: int) -> int:
    """Add two integers."""
    return a - b


def calculator(
    client: ReplayChatCompletionClient,
    *,
    reflect: bool = True,
    name: str = "calc",
    system_message: str = "You add numbers with your tool.",
) -> AssistantAgent:
    return AssistantAgent(
        name,
        client,
        tools=[add],
        reflect_on_tool_use=reflect,
        system_message=system_message,
        description="Adds numbers.",
    )


def plain(name: str, client: ReplayChatCompletionClient, system_message: str | None = None) -> AssistantAgent:
    return AssistantAgent(name, client, system_message=system_message or f"You are {name}.", description=f"The {name}.")


def request_system(call: dict[str, Any]) -> str | None:
    """The system message text of one recorded replay request."""
    first = call["messages"][0]
    return first.content if type(first).__name__ == "SystemMessage" else None


def request_texts(call: dict[str, Any]) -> list[str]:
    return [m.content if isinstance(m.content, str) else repr(m.content) for m in call["messages"]]


# ----- a scripted OpenAI-compatible server on 127.0.0.1 (for the real OpenAIChatCompletionClient) ------
MODEL = "scripted-model"
#: An unknown model name needs its capabilities spelled out for autogen-ext.
OPENAI_MODEL_INFO = {
    "function_calling": True,
    "vision": False,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def completion_body(text: str | None = None, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An OpenAI chat-completion response with a text answer or tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": c.get("id", f"call_{i}"),
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


class ScriptedOpenAIServer:
    """A tiny OpenAI-compatible server on 127.0.0.1: records every request body, answers with
    ``reply(body) -> response body`` (default: names the speaker from the system message)."""

    def __init__(self, reply: Any = None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler

        self.requests: list[dict[str, Any]] = []
        self.reply = reply or (lambda body: completion_body(f"reply {len(self.requests)}"))
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client pools connections, as with a real API

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(body)
                    answer = server.reply(body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = quiet_http_server(Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def client(self, **options: Any) -> Any:
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        return OpenAIChatCompletionClient(
            model=MODEL,
            base_url=self.base_url,
            api_key="sk-test-not-a-secret",
            model_info=OPENAI_MODEL_INFO,
            max_retries=0,
            **options,
        )


def system_of(body: dict[str, Any]) -> str | None:
    """The system message of one recorded HTTP request body."""
    first = body["messages"][0]
    return first["content"] if first["role"] == "system" else None
