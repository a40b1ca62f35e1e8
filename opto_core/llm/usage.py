"""What an LLM call returns and what it cost: the currency of every budget in the loop."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ChatResult:
    """One chat completion: its text and its token counts (cost in USD when a price is known)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    model: str = ""
    cached: bool = False


@dataclass
class Usage:
    """Running totals of LLM calls; thread-safe, since evaluation runs in threads."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, result: ChatResult) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += result.prompt_tokens
            self.completion_tokens += result.completion_tokens
            self.cost_usd += result.cost_usd or 0.0

    def merge(self, counts: dict[str, Any]) -> None:
        """Add totals reported elsewhere (a `Proposal`'s usage) to these."""
        with self._lock:
            self.calls += int(counts.get("calls", 0))
            self.prompt_tokens += int(counts.get("prompt_tokens", 0))
            self.completion_tokens += int(counts.get("completion_tokens", 0))
            self.cost_usd += float(counts.get("cost_usd", 0.0) or 0.0)

    def snapshot(self) -> Usage:
        """A copy of the totals now (the running totals go on changing)."""
        with self._lock:
            return Usage(self.calls, self.prompt_tokens, self.completion_tokens, self.cost_usd)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            int(data.get("calls", 0)),
            int(data.get("prompt_tokens", 0)),
            int(data.get("completion_tokens", 0)),
            float(data.get("cost_usd", 0.0)),
        )


@runtime_checkable
class ChatModel(Protocol):
    """What an optimizer needs from an LLM client (`opto_core.llm.client.OpenAIChat` is the real one)."""

    model: str
    usage: Usage

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        """Send chat messages; with ``json_schema``, ask the server for JSON matching it."""
