"""Model plumbing shared by every optimizer in a comparison: one client, one counter, one budget.

Every LLM call of every optimizer (ours, Trace's, DSPy's) goes through a `BudgetedChat`
wrapped around the same `opto_core` chat model, so the calls, tokens and cost in the table
are counted the same way for all of them, and a hard cap can refuse the call after the last
allowed one. DSPy programs reach the same client through `ChatModelEngine`, a DSPy custom
engine (one engine call = one chat call = one HTTP request; DSPy asks a custom engine once
per candidate when it wants ``n`` of them).
"""

from __future__ import annotations

import threading
from typing import Any

from opto_core.llm.usage import ChatResult, Usage


class BudgetExhausted(RuntimeError):
    """Raised instead of making a call beyond an optimizer's budget of LLM calls."""


class BudgetedChat:
    """A `ChatModel` that counts calls and tokens, and refuses calls past ``max_calls``.

    ``temperature`` (when not None) is sent on every call whose caller sent none, and
    replaces the caller's value when ``force_temperature`` is set: that is how one table
    uses the same sampling temperature for every optimizer.
    """

    def __init__(
        self,
        inner: Any,
        *,
        max_calls: int | None = None,
        temperature: float | None = None,
        force_temperature: bool = False,
        max_tokens: int | None = None,
        label: str = "",
    ) -> None:
        self.inner = inner
        self.max_calls = max_calls
        self.temperature = temperature
        self.force_temperature = force_temperature
        self.max_tokens = max_tokens
        self.label = label
        self.usage = Usage()
        self.refused = 0
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return getattr(self.inner, "model", "") or ""

    @property
    def base_url(self) -> Any:
        return getattr(self.inner, "base_url", None)

    @property
    def context_window(self) -> int | None:
        """The inner client's context window, so that the optimizer's prompts fit it."""
        return getattr(self.inner, "context_window", None)

    @property
    def context_window_source(self) -> str:
        return getattr(self.inner, "context_window_source", "") or ""

    def __deepcopy__(self, memo: dict[int, Any]) -> BudgetedChat:
        return self  # DSPy deep-copies programs and their LMs: the counter must stay shared

    def remaining(self) -> int | None:
        return None if self.max_calls is None else max(0, self.max_calls - self.usage.calls)

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        with self._lock:
            if self.max_calls is not None and self.usage.calls + self._pending >= self.max_calls:
                self.refused += 1
                raise BudgetExhausted(f"{self.label or 'optimizer'}: budget of {self.max_calls} LLM calls used up")
            self._pending += 1
        try:
            if self.temperature is not None and (temperature is None or self.force_temperature):
                temperature = self.temperature
            if max_tokens is None:
                max_tokens = self.max_tokens
            result = self.inner.chat(messages, json_schema=json_schema, temperature=temperature, max_tokens=max_tokens)
            self.usage.add(result)
            return result
        finally:
            with self._lock:
                self._pending -= 1


def messages_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages)


# ----- DSPy: a custom engine that sends DSPy's requests through an opto_core chat model -----------
def make_dspy_lm(
    chat: Any, *, name: str = "opto/bench", temperature: float | None = None, max_tokens: int | None = None
) -> Any:
    """A ``dspy.LM`` whose every call goes through ``chat`` (cache off, no retries: each call counts)."""
    import dspy

    return dspy.LM(
        name, engine=ChatModelEngine(chat), temperature=temperature, max_tokens=max_tokens, cache=False, num_retries=0
    )


class ChatModelEngine:
    """DSPy's custom-engine contract (``complete(Request) -> Response``) on an opto_core chat model."""

    def __init__(self, chat: Any) -> None:
        self.chat = chat

    def __deepcopy__(self, memo: dict[int, Any]) -> ChatModelEngine:
        return self  # shared by every copy of the LM, so every call is counted once

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart
        from dspy.lm15 import Usage as LMUsage

        messages: list[dict[str, str]] = []
        if request.system is not None:
            system = (
                request.system
                if isinstance(request.system, str)
                else "".join(getattr(p, "text", "") or "" for p in request.system)
            )
            messages.append({"role": "system", "content": system})
        for message in request.messages:
            role = message.role if message.role in ("user", "assistant", "system") else "user"
            messages.append({"role": role, "content": message.text or ""})
        config = request.config
        result = self.chat.chat(
            messages, temperature=getattr(config, "temperature", None), max_tokens=getattr(config, "max_tokens", None)
        )
        return Response(
            id=None,
            model=result.model or "bench",
            message=Message.assistant([TextPart(result.text)]),
            finish_reason="stop",
            usage=LMUsage(
                input_tokens=result.prompt_tokens,
                output_tokens=result.completion_tokens,
                total_tokens=result.prompt_tokens + result.completion_tokens,
            ),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass
