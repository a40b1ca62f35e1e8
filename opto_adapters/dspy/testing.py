"""A rule-based task LM for DSPy, through DSPy's own custom-engine interface (no network).

``rule_lm(policy)`` returns a real ``dspy.LM`` whose engine reads the request the way a model
would see it (the instructions, field descriptions, demos, the current inputs, temperature and
max_tokens) and answers with ``policy(call)``: a dict of output fields (written in DSPy's chat
format) or a raw completion string. Every request is kept on ``engine.requests``, so tests can
check what the LM actually received after a write-back. Used by the tests, the examples and the
``opto demo --workflow dspy`` demo.
"""

from __future__ import annotations

import json
import re
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \(([^)]*)\):?\s?(.*)$")


@dataclass
class LMCall:
    """One request as the model sees it, parsed from DSPy's chat format."""

    system: str
    messages: list[dict[str, str]]
    instructions: str
    inputs: dict[str, str]
    input_fields: dict[str, str]  # name -> description shown
    output_fields: dict[str, str]  # name -> description shown
    demos: list[dict[str, str]] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def text(self) -> str:
        """Everything the model was sent, as one string (for assertions)."""
        return self.system + "\n" + "\n".join(m["content"] for m in self.messages)


def _sections(text: str, names: Any) -> dict[str, str]:
    """``[[ ## name ## ]]`` sections for the given field names only (values may hold nested markers,
    as ReAct's trajectory does)."""
    text = text.split("\n\nRespond with the corresponding output fields")[0]
    names = [n for n in names if f"[[ ## {n} ## ]]" in text]
    if not names:
        return {}
    marker = re.compile(r"\[\[ ## (" + "|".join(map(re.escape, [*names, "completed"])) + r") ## \]\]\n?")
    parts = marker.split(text)
    result = {}
    for index in range(1, len(parts) - 1, 2):
        if parts[index] != "completed" and parts[index] not in result:
            result[parts[index]] = parts[index + 1].strip()
    return result


def _field_block(system: str, title: str) -> dict[str, str]:
    match = re.search(
        rf"{title}\n(.*?)(?:\nYour output fields are:|\nAll interactions will be structured)", system, re.S
    )
    fields: dict[str, str] = {}
    last = None
    for line in (match.group(1) if match else "").splitlines():
        found = _FIELD_LINE.match(line.strip())
        if found:
            last = found.group(1)
            fields[last] = found.group(3).strip()
        elif last is not None and line.strip():
            fields[last] = (fields[last] + " " + line.strip()).strip()
    return fields


def parse_request(request: Any) -> LMCall:
    """Read a ``dspy.lm15.Request`` formatted by DSPy's ChatAdapter."""
    system = (
        request.system
        if isinstance(request.system, str)
        else "".join(getattr(p, "text", "") for p in (request.system or []))
    )
    messages = [{"role": m.role, "content": m.text or ""} for m in request.messages]
    objective = system.split("your objective is:", 1)[1] if "your objective is:" in system else ""
    instructions = textwrap.dedent(objective.lstrip(" ").lstrip("\n")).strip()
    input_fields = _field_block(system, "Your input fields are:")
    output_fields = _field_block(system, "Your output fields are:")
    demos = []
    for user, assistant in zip(messages[:-1:2], messages[1:-1:2]):
        if user["role"] == "user" and assistant["role"] == "assistant":
            demos.append({**_sections(user["content"], input_fields), **_sections(assistant["content"], output_fields)})
    inputs = _sections(messages[-1]["content"], input_fields) if messages else {}
    return LMCall(
        system,
        messages,
        instructions,
        inputs,
        input_fields,
        output_fields,
        demos,
        request.config.temperature,
        request.config.max_tokens,
    )


def format_outputs(outputs: dict[str, Any]) -> str:
    """Output fields in DSPy's chat format."""
    parts = []
    for name, value in outputs.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"[[ ## {name} ## ]]\n{text}")
    return "\n\n".join(parts) + "\n\n[[ ## completed ## ]]"


class RuleEngine:
    """A DSPy custom engine: ``complete(Request) -> Response`` from a Python policy."""

    def __init__(self, policy: Callable[[LMCall], dict[str, Any] | str], *, model: str = "rule") -> None:
        self.policy = policy
        self.model = model
        self.requests: list[LMCall] = []
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Response:
        call = parse_request(request)
        with self._lock:
            self.requests.append(call)
        answer = self.policy(call)
        text = answer if isinstance(answer, str) else format_outputs(answer)
        prompt_tokens = max(1, len(call.text) // 4)
        completion_tokens = max(1, len(text) // 4)
        return Response(
            id=None,
            model=self.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(
                input_tokens=prompt_tokens,
                output_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    def stream(self, request: Any) -> Any:
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> RuleEngine:
        return self  # copies of a program share the one engine (and its request log)


class AsyncRuleEngine:
    """The async counterpart DSPy asks for when a program is called with ``acall``."""

    def __init__(self, sync: RuleEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Response:
        return self.sync.complete(request)

    async def stream(self, request: Any) -> Any:
        for event in self.sync.stream(request):
            yield event

    async def aclose(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncRuleEngine:
        return self


def rule_lm(
    policy: Callable[[LMCall], dict[str, Any] | str], *, model: str = "rule/policy", cache: bool = False, **kwargs: Any
) -> dspy.LM:
    """A ``dspy.LM`` answering by ``policy``; its engine (with ``.requests``) is ``lm.engine``."""
    engine = RuleEngine(policy, model=model)
    return dspy.LM(model, engine=engine, async_engine=AsyncRuleEngine(engine), cache=cache, **kwargs)
