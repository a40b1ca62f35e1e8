"""The two OpenAI wire formats a gateway sees, reduced to one shape: messages in, an answer out.

Every framework's model call arrives as one of two request bodies:

- **Chat Completions** (``POST /v1/chat/completions``): ``messages`` (system/developer, user,
  assistant with ``tool_calls``, tool with ``tool_call_id``), ``tools`` (``{"type": "function",
  "function": {"name", "description", "parameters"}}``), settings (``temperature``, ``top_p``,
  ``max_tokens`` or ``max_completion_tokens``, ...). The answer is ``choices[0].message``; a streamed
  answer is a series of ``chat.completion.chunk`` deltas ended by ``data: [DONE]``.
- **Responses** (``POST /v1/responses``, the OpenAI Agents SDK's default): ``instructions`` (the
  system prompt), ``input`` (a string, or items: messages, ``function_call``, ``function_call_output``),
  ``tools`` (``{"type": "function", "name", "description", "parameters"}``), ``max_output_tokens``.
  The answer's ``output`` holds message and ``function_call`` items; a streamed answer ends with a
  ``response.completed`` event that carries the whole response.

`parse_request` and `parse_answer` turn either into `WireRequest` / `WireAnswer`; each
`WireMessage` remembers where it lives in the body (``path``), so that `set_text` can rewrite it in
place (deploy by rewriting) without touching anything else. `StreamAssembler` rebuilds the answer of
a streamed call from its bytes as they pass through, so the proxy never waits for the end to forward.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHAT = "chat"
RESPONSES = "responses"
#: Message roles that carry the system prompt (``developer`` is the newer name for ``system``).
SYSTEM_ROLES = ("system", "developer")
#: Request settings recorded with each call (the wire's own names).
SETTING_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


class NotUnderstood(ValueError):
    """A request or answer body that is not in the shape its endpoint documents."""


@dataclass
class WireMessage:
    """One message of a request: role, text, tool-call ids, and where it lives in the body.

    ``call_ids`` are the tool calls an assistant message requests (``tool_calls``) or the one a tool
    result answers; ``tool_calls`` gives the requested calls as ``{"id", "name", "arguments"}``.
    ``path`` locates the text in the body (``("messages", 2)``, ``("instructions",)``, ``("input", 0)``);
    ``rewritable`` is False when the content is not a single text (images, several parts).
    """

    role: str
    content: str
    path: tuple[Any, ...]
    call_ids: tuple[str, ...] = ()
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    name: str | None = None
    rewritable: bool = True

    @property
    def is_system(self) -> bool:
        return self.role in SYSTEM_ROLES


@dataclass
class WireRequest:
    """A model request in either format: model, messages (system prompt first), tools, settings."""

    api: str
    model: str
    messages: list[WireMessage]
    tools: list[dict[str, str]]  # {"name", "description"}
    settings: dict[str, Any]
    stream: bool = False


@dataclass
class WireAnswer:
    """A model answer in either format: its text or its tool calls, token usage, ids."""

    text: str | None = None
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # {"id", "name", "arguments"}
    usage: dict[str, int] = field(default_factory=dict)  # {"prompt_tokens", "completion_tokens"}
    model: str = ""
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tool_calls": self.tool_calls,
            "usage": self.usage,
            "model": self.model,
            "id": self.id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WireAnswer:
        return cls(
            data.get("text"),
            list(data.get("tool_calls") or []),
            dict(data.get("usage") or {}),
            str(data.get("model") or ""),
            str(data.get("id") or ""),
        )


def api_of(path: str) -> str | None:
    """Which format an endpoint path speaks: `CHAT`, `RESPONSES`, or None (forwarded, not recorded)."""
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return CHAT
    if path.endswith("/responses"):
        return RESPONSES
    return None


# ----- requests -------------------------------------------------------------------------------------
def parse_request(api: str, body: Any) -> WireRequest:
    """A request body as a `WireRequest`; `NotUnderstood` when it is not that endpoint's shape."""
    if not isinstance(body, dict):
        raise NotUnderstood(f"the request body is a JSON {type(body).__name__}, not an object")
    messages = _chat_messages(body) if api == CHAT else _responses_messages(body)
    tools = [_tool(t, api) for t in body.get("tools") or [] if isinstance(t, dict)]
    settings = {k: body[k] for k in SETTING_KEYS if body.get(k) is not None}
    return WireRequest(
        api, str(body.get("model") or ""), messages, [t for t in tools if t["name"]], settings, bool(body.get("stream"))
    )


def _chat_messages(body: dict[str, Any]) -> list[WireMessage]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise NotUnderstood("a chat completions request needs 'messages', a list of objects")
    messages = []
    for index, message in enumerate(raw):
        text, rewritable = _text(message.get("content"))
        calls = [
            _call(c.get("id"), c.get("function") or {}) for c in message.get("tool_calls") or [] if isinstance(c, dict)
        ]
        call_ids = tuple(c["id"] for c in calls)
        if not call_ids and message.get("tool_call_id"):
            call_ids = (str(message["tool_call_id"]),)
        messages.append(
            WireMessage(
                str(message.get("role") or "user"),
                text,
                ("messages", index),
                call_ids,
                calls,
                message.get("name"),
                rewritable,
            )
        )
    return messages


def _responses_messages(body: dict[str, Any]) -> list[WireMessage]:
    messages: list[WireMessage] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append(WireMessage("system", instructions, ("instructions",)))
    raw = body.get("input")
    if isinstance(raw, str):
        return messages + [WireMessage("user", raw, ("input",))]
    if not isinstance(raw, list):
        raise NotUnderstood("a responses request needs 'input', a string or a list of items")
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise NotUnderstood(f"responses input item {index} is not an object")
        kind = item.get("type", "message")
        if kind == "function_call":
            call = _call(item.get("call_id"), item)
            previous = messages[-1] if messages else None
            if (
                previous is not None
                and previous.role == "assistant"
                and previous.tool_calls
                and previous.path[0] == "input_calls"
            ):  # consecutive calls are one request
                previous.tool_calls.append(call)
                previous.call_ids += (call["id"],)
                continue
            messages.append(
                WireMessage("assistant", "", ("input_calls", index), (call["id"],), [call], rewritable=False)
            )
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
            messages.append(
                WireMessage("tool", text, ("input", index), (str(item.get("call_id") or ""),), rewritable=False)
            )
        elif kind == "message" or "role" in item:
            text, rewritable = _text(item.get("content"))
            messages.append(WireMessage(str(item.get("role") or "user"), text, ("input", index), rewritable=rewritable))
        # other items (reasoning, web search calls...) carry no text a later call consumes
    return messages


def _text(content: Any) -> tuple[str, bool]:
    """The text of a message's content, and whether it is one text that can be rewritten in place."""
    if content is None:
        return "", False
    if isinstance(content, str):
        return content, True
    if isinstance(content, list):
        texts = [str(part["text"]) for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
        return "\n".join(texts), len(texts) == 1 and len(content) == 1
    return json.dumps(content, ensure_ascii=False), False


def _call(call_id: Any, function: dict[str, Any]) -> dict[str, str]:
    arguments = function.get("arguments", "")
    return {
        "id": str(call_id or ""),
        "name": str(function.get("name") or ""),
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
    }


def _function_of(tool: dict[str, Any], api: str) -> dict[str, Any]:
    """Where a tool's name and description live: ``tool["function"]`` in chat completions, the tool itself
    in the Responses API."""
    function = tool.get("function")
    return function if api == CHAT and isinstance(function, dict) else tool


def _tool(tool: dict[str, Any], api: str) -> dict[str, str]:
    spec = _function_of(tool, api)
    return {"name": str(spec.get("name") or ""), "description": str(spec.get("description") or "")}


# ----- rewriting --------------------------------------------------------------------------------------
def set_text(body: dict[str, Any], message: WireMessage, text: str) -> None:
    """Replace one message's text in a request body (in place), keeping its content's shape."""
    if not message.rewritable:
        raise ValueError(f"the message at {message.path} is not a single text")
    if message.path == ("instructions",):
        body["instructions"] = text
        return
    if message.path == ("input",):
        body["input"] = text
        return
    key, index = message.path
    item = body[key][index]
    if isinstance(item.get("content"), list):
        item["content"][0]["text"] = text
    else:
        item["content"] = text


def set_tool_description(body: dict[str, Any], api: str, tool: str, description: str) -> bool:
    """Replace a tool's description in a request body; whether the tool was there."""
    for spec in body.get("tools") or []:
        if not isinstance(spec, dict):
            continue
        target = _function_of(spec, api)
        if target.get("name") == tool:
            target["description"] = description
            return True
    return False


def setting_key(api: str, body: dict[str, Any], name: str) -> str:
    """The wire name of a setting in this request: ``max_tokens`` is ``max_output_tokens`` in the
    Responses API and ``max_completion_tokens`` where the request already uses that name."""
    if name == "max_tokens":
        if api == RESPONSES:
            return "max_output_tokens"
        if "max_completion_tokens" in body:
            return "max_completion_tokens"
    return name


# ----- answers ----------------------------------------------------------------------------------------
def parse_answer(api: str, body: Any) -> WireAnswer:
    """A (non-streamed) answer body as a `WireAnswer`; `NotUnderstood` when it has no usable output."""
    if not isinstance(body, dict):
        raise NotUnderstood(f"the answer is a JSON {type(body).__name__}, not an object")
    return _chat_answer(body) if api == CHAT else _responses_answer(body)


def _chat_answer(body: dict[str, Any]) -> WireAnswer:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise NotUnderstood("a chat completion needs 'choices'")
    message = choices[0].get("message") or {}
    calls = [
        _call(c.get("id"), c.get("function") or {}) for c in message.get("tool_calls") or [] if isinstance(c, dict)
    ]
    text, _ = _text(message.get("content"))
    return WireAnswer(
        None if calls and not text else text,
        calls,
        _chat_usage(body.get("usage")),
        str(body.get("model") or ""),
        str(body.get("id") or ""),
    )


def _chat_usage(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }


def _responses_answer(body: dict[str, Any]) -> WireAnswer:
    output = body.get("output")
    if not isinstance(output, list):
        raise NotUnderstood("a response needs 'output', a list of items")
    texts: list[str] = []
    calls: list[dict[str, str]] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            text, _ = _text(item.get("content"))
            texts.append(text)
        elif item.get("type") == "function_call":
            calls.append(_call(item.get("call_id"), item))
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tokens = (
        {
            "prompt_tokens": int(usage.get("input_tokens") or 0),
            "completion_tokens": int(usage.get("output_tokens") or 0),
        }
        if usage
        else {}
    )
    joined = "\n".join(texts) if texts else None
    return WireAnswer(joined, calls, tokens, str(body.get("model") or ""), str(body.get("id") or ""))


class StreamAssembler:
    """Rebuilds a streamed answer from server-sent events, fed in whatever pieces the bytes arrive.

    Chat Completions: text deltas are concatenated, tool-call deltas merged by ``index``, usage taken
    from the chunk that carries it. Responses: the ``response.completed`` (or ``response.failed`` /
    ``response.incomplete``) event carries the whole response; text deltas are kept in case it never
    comes. Events it cannot parse are counted (``skipped``), never raised: the bytes pass through anyway.
    """

    def __init__(self, api: str) -> None:
        self.api = api
        self.skipped = 0
        self._buffer = b""
        self._text: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self._usage: dict[str, int] = {}
        self._model = ""
        self._id = ""
        self._final: WireAnswer | None = None
        self.error: str | None = None

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while True:
            cut = _event_end(self._buffer)
            if cut is None:
                return
            end, size = cut
            event, self._buffer = self._buffer[:end], self._buffer[end + size :]
            self._event(event)

    def _event(self, raw: bytes) -> None:
        data = [line[5:].lstrip() for line in raw.decode("utf-8", "replace").splitlines() if line.startswith("data:")]
        if not data:
            return
        text = "\n".join(data)
        if text.strip() == "[DONE]":
            return
        try:
            event = json.loads(text)
        except ValueError:
            self.skipped += 1
            return
        if not isinstance(event, dict):
            self.skipped += 1
            return
        if self.api == CHAT:
            self._chat_chunk(event)
        else:
            self._responses_event(event)

    def _chat_chunk(self, chunk: dict[str, Any]) -> None:
        self._model = self._model or str(chunk.get("model") or "")
        self._id = self._id or str(chunk.get("id") or "")
        if isinstance(chunk.get("usage"), dict):
            self._usage = _chat_usage(chunk["usage"])
        if isinstance(chunk.get("error"), dict):
            self.error = str(chunk["error"].get("message") or chunk["error"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {} if isinstance(choice, dict) else {}
            if isinstance(delta.get("content"), str):
                self._text.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = self._calls.setdefault(
                    int(call.get("index", len(self._calls))), {"id": "", "name": "", "arguments": ""}
                )
                function = call.get("function") or {}
                slot["id"] = slot["id"] or str(call.get("id") or "")
                slot["name"] = slot["name"] or str(function.get("name") or "")
                slot["arguments"] += str(function.get("arguments") or "")

    def _responses_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._text.append(event["delta"])
        elif kind in ("response.completed", "response.incomplete", "response.failed") and isinstance(
            event.get("response"), dict
        ):
            try:
                self._final = _responses_answer(event["response"])
            except NotUnderstood:
                self.skipped += 1
            if kind == "response.failed":
                error = event["response"].get("error") or {}
                self.error = str(error.get("message") if isinstance(error, dict) else error) or "response.failed"
        elif kind == "error":
            self.error = str(event.get("message") or event)

    def answer(self) -> WireAnswer:
        """The answer assembled so far (complete once the stream ended)."""
        if self._final is not None:
            return self._final
        calls = [self._calls[k] for k in sorted(self._calls)]
        text = "".join(self._text)
        return WireAnswer(text if text or not calls else None, calls, dict(self._usage), self._model, self._id)


def _event_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first complete event ends in ``buffer`` (position, separator length), if it does."""
    found = [(buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n")]
    found = [(pos, size) for pos, size in found if pos >= 0]
    return min(found) if found else None
