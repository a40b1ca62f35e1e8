"""Copies of LangChain values as plain JSON, taken at the moment a callback sees them.

`BaseTracer` keeps inputs and outputs by reference, and frameworks mutate them later (LangGraph
gives a `HumanMessage` an id after the graph started, a user's dict may be reused), so every
value is copied when it is recorded. The copy is also what the optimizer reads, so messages
become short dicts (``{"type": "ai", "content": ..., "tool_calls": [...]}``) rather than
LangChain's serialization, which is several times longer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import ChatPromptValue, PromptValue

from opto_core.kernel.graph import bounded_repr

MAX_DEPTH = 24
_PLAIN = (str, int, bool)
_CHUNK_TYPES = {
    "AIMessageChunk": "ai",
    "HumanMessageChunk": "human",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "ChatMessageChunk": "chat",
    "FunctionMessageChunk": "function",
}


def message_dict(message: BaseMessage) -> dict[str, Any]:
    """A message as the short dict the graph stores (no ids: they are noise to an optimizer)."""
    kind = message.type
    if kind.endswith("Chunk"):  # streamed messages: "AIMessageChunk" -> "ai"
        kind = _CHUNK_TYPES.get(kind, kind)
    data: dict[str, Any] = {"type": kind, "content": snapshot(message.content)}
    name = getattr(message, "name", None)
    if name:
        data["name"] = name
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        data["tool_calls"] = [
            {"name": c.get("name"), "args": snapshot(c.get("args")), "id": c.get("id")} for c in tool_calls
        ]
    tool_call_id = getattr(message, "tool_call_id", None)
    if tool_call_id:
        data["tool_call_id"] = tool_call_id
    return data


def _lc_message(value: dict[str, Any]) -> dict[str, Any] | None:
    """A message in LangChain's ``dumpd`` form (as `BaseTracer` stores chat inputs) as a short dict."""
    ident = value.get("id")
    if (
        value.get("lc") != 1
        or not isinstance(ident, list)
        or not ident
        or not str(ident[-1]).endswith(("Message", "MessageChunk"))
    ):
        return None
    kwargs = value.get("kwargs") or {}
    kind = kwargs.get("type") or str(ident[-1]).replace("MessageChunk", "").replace("Message", "").lower()
    data: dict[str, Any] = {"type": kind, "content": snapshot(kwargs.get("content", ""))}
    for key in ("name", "tool_call_id"):
        if kwargs.get(key):
            data[key] = kwargs[key]
    if kwargs.get("tool_calls"):
        data["tool_calls"] = [
            {"name": c.get("name"), "args": snapshot(c.get("args")), "id": c.get("id")} for c in kwargs["tool_calls"]
        ]
    return data


def snapshot(value: Any, depth: int = 0) -> Any:
    """A JSON-safe deep copy of ``value`` (messages, prompt values, documents, pydantic models...).

    Anything else becomes a bounded repr, so a snapshot never holds a reference to user objects.
    """
    kind = type(value)
    if value is None or kind in _PLAIN:
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if depth > MAX_DEPTH:
        return bounded_repr(value, 200)
    if kind is dict:
        if value.get("lc") == 1:
            message = _lc_message(value)
            if message is not None:
                return message
        return {str(k): snapshot(v, depth + 1) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [snapshot(v, depth + 1) for v in value]
    if isinstance(value, BaseMessage):
        return message_dict(value)
    if isinstance(value, ChatPromptValue):
        return [message_dict(m) for m in value.messages]
    if isinstance(value, PromptValue):
        return value.to_string()
    if isinstance(value, Document):
        return {"page_content": value.page_content, "metadata": snapshot(value.metadata, depth + 1)}
    if isinstance(value, (str, int)):  # subclasses (enums, tagged values)
        return str(value) if isinstance(value, str) else int(value)
    if isinstance(value, float):
        return snapshot(float(value))
    if isinstance(value, dict):
        return {str(k): snapshot(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [snapshot(v, depth + 1) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return snapshot(dump(), depth + 1)
        except Exception:  # a model that cannot dump itself: fall back to its repr
            pass
    if is_dataclass(value) and not isinstance(value, type):
        try:
            return snapshot(asdict(value), depth + 1)
        except Exception:
            pass
    return bounded_repr(value)


def messages_in(value: Any, depth: int = 0) -> list[BaseMessage]:
    """Every `BaseMessage` inside a (raw) value: a message, a prompt value, or lists/dicts of them."""
    if isinstance(value, BaseMessage):
        return [value]
    if depth > 4:
        return []
    if isinstance(value, ChatPromptValue):
        return list(value.messages)
    if isinstance(value, dict):
        return [m for v in value.values() for m in messages_in(v, depth + 1)]
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, BaseMessage) for v in value):
            return list(value)
        return [m for v in value for m in messages_in(v, depth + 1)]
    return []


def text_of(value: Any) -> str | None:
    """The text a value carries, for finding its producer by text (`opto_core.kernel.provenance`): a
    string, a message's content, a document's page content."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage) and isinstance(value.content, str):
        return value.content
    if isinstance(value, Document):
        return value.page_content
    return None


class Part:
    """One piece of a run's input as it was when the run started: its key and what identifies it.

    Inputs are matched to the steps that produced them only when the graph is built, after the
    run; by then lists may have grown and messages may have ids, so the identifying data is taken
    at the start. The object itself is kept (until the top-level run ends) for identity matching.
    """

    __slots__ = ("key", "obj", "message_id", "tool_call_id", "text", "value")

    def __init__(self, key: str, obj: Any) -> None:
        self.key = key
        self.obj = obj
        self.message_id = getattr(obj, "id", None) if isinstance(obj, BaseMessage) else None
        self.tool_call_id = getattr(obj, "tool_call_id", None) if isinstance(obj, BaseMessage) else None
        self.text = text_of(obj)
        self.value = snapshot(obj)  # what it was at the start, shown when no producer is found


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple, dict, str)) and not value)


def parts_of(raw: Any) -> list[Part]:
    """The identifiable pieces of a run's input (dict keys, messages), for data-flow matching."""
    parts: list[Part] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            _add_parts(parts, str(key), value)
    elif isinstance(raw, (list, tuple)) and raw and all(isinstance(m, BaseMessage) for m in raw):
        parts.extend(Part(f"messages[{i}]", m) for i, m in enumerate(raw))
    else:
        _add_parts(parts, "", raw)
    return parts


def _add_parts(parts: list[Part], key: str, value: Any) -> None:
    if _empty(value):
        return
    if isinstance(value, ChatPromptValue):
        value = value.messages
    if isinstance(value, (list, tuple)) and any(isinstance(m, BaseMessage) for m in value):
        parts.extend(
            Part(f"{key}[{i}]" if key else f"messages[{i}]", m)
            for i, m in enumerate(value)
            if isinstance(m, BaseMessage)
        )
        return
    parts.append(Part(key, value))
