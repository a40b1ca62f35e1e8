"""What every optimizer shares: proposals, validation of suggestions, one retry, and memory.

An optimizer turns problem instances into a `Proposal`. The LLM's answer is parsed, each
suggested value goes through its `Parameter.validate`, and anything unusable (no JSON, an
unknown name, a value of the wrong kind, code that does not compile) is sent back to the LLM
once, with the exact reasons. Only valid values are ever returned as accepted.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..backward import ProblemInstance
from ..graph import shorten
from ..parameters import InvalidValue, Parameter
from ..usage import ChatModel, ChatResult, Usage
from .parsing import ParseError, is_terminate, match_names, parse_answer


@dataclass
class Proposal:
    """One optimizer step's outcome: reasoning, valid new values, and what was rejected and why."""

    reasoning: str = ""
    accepted: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    terminated: bool = False
    attempts: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"reasoning": self.reasoning, "accepted": self.accepted, "rejected": self.rejected,
                "usage": self.usage, "terminated": self.terminated, "attempts": self.attempts, "error": self.error}


@dataclass
class MemoryEntry:
    """A past step: the values then, and what the feedback said about them."""

    values: dict[str, Any]
    feedback: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "feedback": self.feedback, "score": self.score}


class Optimizer:
    """Base class: parameters by name, an LLM, memory of the last ``memory_size`` steps."""

    system_prompt = ""

    def __init__(self, parameters: Sequence[Parameter] | None, llm: ChatModel | None = None, *,
                 memory_size: int = 5, token_budget: int = 8000, temperature: float | None = None,
                 max_answer_tokens: int | None = None, retry_invalid: bool = True) -> None:
        if memory_size < 0:
            raise ValueError("memory_size must be >= 0 (0 turns memory off)")
        self.params: dict[str, Parameter] = {}
        if parameters is not None:
            self.set_parameters(parameters)
        self._llm = llm
        self.memory_size = memory_size
        self.memory: list[MemoryEntry] = []
        self.token_budget = token_budget
        self.temperature = temperature
        self.max_answer_tokens = max_answer_tokens
        self.retry_invalid = retry_invalid

    @property
    def llm(self) -> ChatModel:
        if self._llm is None:  # the default client, created only when first needed
            from ..llm import OpenAIChat

            self._llm = OpenAIChat()
        return self._llm

    # ----- parameters ------------------------------------------------------------------
    def set_parameters(self, parameters: Sequence[Parameter]) -> None:
        """Use these parameters (the loop refreshes them before every step)."""
        self.params = {p.name: p for p in parameters}

    @property
    def trainable(self) -> dict[str, Parameter]:
        return {name: p for name, p in self.params.items() if p.trainable}

    def current_values(self) -> dict[str, Any]:
        return {name: copy.deepcopy(p.value) for name, p in self.trainable.items()}

    # ----- memory ----------------------------------------------------------------------
    def remember(self, instances: Sequence[ProblemInstance]) -> None:
        if self.memory_size == 0:
            return
        scores = [fb.score for inst in instances for fb in inst.feedback.values() if fb.score is not None]
        text = " || ".join(inst.feedback_text() for inst in instances)
        self.memory.append(MemoryEntry(self.current_values(), shorten(text, 1500),
                                       sum(scores) / len(scores) if scores else None))
        del self.memory[: -self.memory_size]

    def memory_text(self) -> str:
        if not self.memory or self.memory_size == 0:
            return ""
        blocks = []
        for index, entry in enumerate(self.memory, 1):
            values = {k: shorten(v, 600) if isinstance(v, str) else v for k, v in entry.values.items()}
            blocks.append(json.dumps({"variables": values, "feedback": entry.feedback}, ensure_ascii=False))
        return ("\n#Memory\nEarlier values of the variables and the feedback they got (oldest first):\n"
                + "\n".join(blocks) + "\n")

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this optimizer exactly."""
        return {"memory": [entry.to_dict() for entry in self.memory]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = [MemoryEntry(e["values"], e["feedback"], e.get("score")) for e in state.get("memory", [])]

    # ----- one step ----------------------------------------------------------------------
    def build_messages(self, instances: Sequence[ProblemInstance]) -> list[dict[str, str]]:
        raise NotImplementedError

    def response_schema(self) -> dict[str, Any]:
        """JSON schema of the answer, for servers that constrain decoding to it."""
        kinds = {"float": {"type": "number"}, "int": {"type": "integer"}, "text": {"type": "string"},
                 "code": {"type": "string"}}
        properties = {name: kinds.get(p.kind, {}) for name, p in self.trainable.items()}
        return {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string"},
                "suggestion": {"type": "object", "properties": properties},
            },
            "required": ["reasoning", "suggestion"],
        }

    def step(self, instances: ProblemInstance | Sequence[ProblemInstance]) -> Proposal:
        """One LLM call (plus at most one retry) that proposes new values for the parameters."""
        if isinstance(instances, ProblemInstance):
            instances = [instances]
        if not self.trainable:
            raise ValueError("the optimizer has no trainable parameter")
        messages = self.build_messages(instances)
        usage = Usage()
        proposal = Proposal()
        result = self._call(messages, usage)
        self.remember(instances)  # only once the call succeeded: a failed step leaves no trace in memory
        problems = self._read(result.text, proposal)
        proposal.attempts = 1
        if problems and self.retry_invalid and not proposal.terminated:
            messages = messages + [
                {"role": "assistant", "content": result.text},
                {"role": "user", "content": "Some of your answer could not be used:\n- " + "\n- ".join(problems)
                 + "\nAnswer again with one JSON object in the same format. Repeat any value you still want; "
                   "use only the variable names in #Variables."},
            ]
            result = self._call(messages, usage)
            retry = Proposal()
            self._read(result.text, retry)
            proposal.attempts = 2
            proposal.accepted.update(retry.accepted)
            if retry.reasoning and retry.reasoning != proposal.reasoning:  # keep both attempts' reasoning
                proposal.reasoning = (f"{proposal.reasoning}\n[retry] {retry.reasoning}" if proposal.reasoning
                                      else retry.reasoning)
            proposal.rejected = {k: v for k, v in {**proposal.rejected, **retry.rejected}.items()
                                 if k not in proposal.accepted}
            proposal.terminated = retry.terminated and not proposal.accepted
            proposal.error = retry.error
        proposal.usage = usage.to_dict()
        return proposal

    def _call(self, messages: list[dict[str, str]], usage: Usage) -> ChatResult:
        result = self.llm.chat(messages, json_schema=self.response_schema(), temperature=self.temperature,
                               max_tokens=self.max_answer_tokens)
        usage.add(result)
        return result

    def _read(self, text: str, proposal: Proposal) -> list[str]:
        """Fill ``proposal`` from one answer; return the problems to report back."""
        if is_terminate(text):
            proposal.terminated = True
            proposal.reasoning = "TERMINATE"
            return []
        try:
            answer = parse_answer(text)
        except ParseError as exc:
            proposal.error = str(exc)
            return [str(exc)]
        proposal.reasoning = str(answer.get("reasoning", ""))
        suggestion = answer.get("suggestion")
        if suggestion is None:
            others = {k: v for k, v in answer.items() if k not in ("reasoning", "answer")}
            matched, _ = match_names(others, list(self.trainable))
            suggestion = others if matched else {}
        if not isinstance(suggestion, dict):
            proposal.error = f'"suggestion" must be a JSON object mapping variable names to values, got {type(suggestion).__name__}'
            return [proposal.error]
        matched, unknown = match_names(suggestion, list(self.trainable))
        problems = []
        for key in unknown:
            proposal.rejected[key] = "unknown variable; the variables are " + ", ".join(self.trainable)
            problems.append(f"{key!r} is not a variable you may change (variables: {', '.join(self.trainable)})")
        for name, value in matched.items():
            try:
                proposal.accepted[name] = self.trainable[name].validate(value)
            except InvalidValue as exc:
                proposal.rejected[name] = exc.reason
                problems.append(f"{name}: {exc.reason}")
        if not suggestion and not proposal.terminated:
            proposal.terminated = True  # an empty suggestion means: change nothing
        return problems
