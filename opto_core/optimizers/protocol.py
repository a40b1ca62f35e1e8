"""What the loop asks of an optimizer, LLM-driven or not: the optimizer protocol.

An optimizer is told which parameters it may change (`set_parameters`, before every step, since a
step may change what is trainable), reads problem instances and returns a `Proposal` (`step`), is
told the score of every candidate the loop evaluated (`observe`: a search learns from these, an
LLM optimizer ignores them), and saves and restores what a resumed run needs (`state_dict`,
`load_state_dict`). Nothing else: the loop never sets an optimizer's attributes. What a step may
spend is an argument of the step (``max_calls``), and a memory is sized through `resize_memory`
by optimizers that have one (`HasMemory`).

`ParameterSet` holds the bookkeeping every optimizer here shares (the parameters by name, the
trainable ones, their current values). The LLM machinery (prompt, context window, validation retry,
memory) lives in `opto_core.optimizers.llm_optimizer.LLMOptimizer`; `Search` has none of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from opto_core.kernel.backward import ProblemInstance
from opto_core.kernel.parameters import Parameter


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
    #: which part proposed each accepted value ("llm", "search", ...), for optimizers that combine several
    proposed_by: dict[str, str] = field(default_factory=dict)
    #: the token budget the prompt was rendered within, and why (see `LLMOptimizer.step`)
    budget: dict[str, Any] = field(default_factory=dict)
    #: keys of a recorded proposal this version does not declare, kept as they are
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "reasoning": self.reasoning,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "usage": self.usage,
            "terminated": self.terminated,
            "attempts": self.attempts,
            "error": self.error,
        }
        if self.proposed_by:
            data["proposed_by"] = self.proposed_by
        if self.budget:
            data["budget"] = self.budget
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        """A proposal from `to_dict`'s form (a step record), leniently: a field of the wrong type
        reads as empty, a key this version does not know goes to ``extra``."""

        def mapping(key: str) -> dict[str, Any]:
            value = data.get(key)
            return dict(value) if isinstance(value, Mapping) else {}

        attempts = data.get("attempts")
        return cls(
            reasoning=str(data.get("reasoning") or ""),
            accepted=mapping("accepted"),
            rejected={str(k): str(v) for k, v in mapping("rejected").items()},
            usage=mapping("usage"),
            terminated=data.get("terminated") is True,
            attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0,
            error=str(data.get("error") or ""),
            proposed_by=mapping("proposed_by"),
            budget=mapping("budget"),
            extra={k: v for k, v in data.items() if k not in _PROPOSAL_KEYS},
        )


_PROPOSAL_KEYS = (
    "reasoning",
    "accepted",
    "rejected",
    "usage",
    "terminated",
    "attempts",
    "error",
    "proposed_by",
    "budget",
)


@runtime_checkable
class Optimizer(Protocol):
    """What `opto_core.optimize` calls. Any object with these five methods is an optimizer."""

    def set_parameters(self, parameters: Sequence[Parameter]) -> None:
        """Use these parameters from now on (the loop refreshes them before every step)."""

    def step(self, instances: Sequence[ProblemInstance], *, max_calls: int | None = None) -> Proposal:
        """Propose new values from ``instances``, making at most ``max_calls`` model calls (None: no limit)."""
        ...

    def observe(self, values: dict[str, Any], score: float | None) -> None:
        """The score of one evaluated candidate, kept or not (replayed from the history on resume)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this optimizer exactly (JSON-serializable)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (possibly by an earlier version: missing keys are defaults)."""


@runtime_checkable
class HasMemory(Protocol):
    """An optimizer with a memory of past steps, which ``Settings.memory_size`` may resize."""

    def resize_memory(self, size: int) -> None:
        """Keep the last ``size`` steps from now on (0: no memory)."""


class ParameterSet:
    """The parameters an optimizer works on, by name: every optimizer here starts from this."""

    def __init__(self, parameters: Sequence[Parameter] | None = None) -> None:
        self.params: dict[str, Parameter] = {}
        if parameters is not None:
            self.set_parameters(parameters)

    def set_parameters(self, parameters: Sequence[Parameter]) -> None:
        """Use these parameters (the loop refreshes them before every step)."""
        self.params = {p.name: p for p in parameters}

    @property
    def trainable(self) -> dict[str, Parameter]:
        return {name: p for name, p in self.params.items() if p.trainable}

    def current_values(self) -> dict[str, Any]:
        return {name: copy.deepcopy(p.value) for name, p in self.trainable.items()}

    def observe(self, values: dict[str, Any], score: float | None) -> None:
        """Nothing to learn from scores by default (search-based optimizers override this)."""

    def _need_trainable(self) -> None:
        if not self.trainable:
            raise ValueError("the optimizer has no trainable parameter")


def describe(optimizer: Any) -> dict[str, Any]:
    """The optimizer as the run directory's ``config.json`` names it: its class, and its model and
    endpoint when it has an LLM client (`LLMOptimizer.llm_client`)."""
    client = getattr(optimizer, "llm_client", None)
    return {
        "optimizer": type(optimizer).__name__,
        "model": getattr(client, "model", None),
        "base_url": str(getattr(client, "base_url", "") or "") or None,
    }
