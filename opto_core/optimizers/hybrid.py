"""Hybrid: the LLM for text and code, a search method for numbers, in one step.

The Trace paper's own next step ("a hybrid workflow combining LLM and search algorithms ... could
lead to a general-purpose OPTO optimizer"). One step proposes every trainable parameter:

- text, code and json parameters come from OptoPrime: one LLM call over the trace, as usual;
- float, int (with both bounds) and choice parameters come from a sampler (Optuna's TPE by
  default, CMA-ES or random) that has seen every earlier evaluation as a trial (`observe`);
- when the LLM suggests a number anyway, that suggestion is enqueued: it is evaluated as a trial
  of the sampler on the next step the sampler would propose (never twice in a row, so a model
  that keeps suggesting numbers cannot shut the search out), and the sampler learns from its score.

A number without both bounds cannot be searched: it is left to the LLM (documented choice).
With no parameter left to the LLM (only searchable numbers), a step makes no LLM call at all.
The step record's ``proposal.proposed_by`` says which part proposed each value.

Hybrid is a composition, not a kind of OptoPrime: it holds an `OptoPrime` (``llm_part``, which sees
every trainable parameter) and a `Search` over the searchable ones (``search_part``), and merges their
proposals.

Resume: the sampler's trials are rebuilt from the evaluations the loop replays (`observe`); the
LLM's memory and the queue of its numeric ideas are in `state_dict`, like OptoPrime's memory (the
same keys as before Hybrid was split, so older checkpoints load).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from opto_core.kernel.backward import ProblemInstance
from opto_core.kernel.parameters import Parameter
from opto_core.llm.usage import ChatModel, Usage
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.optimizers.protocol import ParameterSet, Proposal
from opto_core.optimizers.search import (
    OPTUNA_SAMPLERS,
    Sampler,
    Search,
    SearchSpace,
    check_sampler,
    searchable,
    unbounded,
)

SEARCH_NOTE = (
    "\nNote: the float, int and choice variables ({names}) are also tuned by a search method from every "
    "earlier score; a value you suggest for them is tried as one of its trials.\n"
)


class Hybrid(ParameterSet):
    """OptoPrime for text/code/json, an Optuna sampler for float/int/choice; one step, one proposal.

    ``settings`` go to the OptoPrime part (``memory_size``, ``token_budget``, ``temperature``,
    ``max_answer_tokens``, ``retry_invalid``, ``trace``)."""

    def __init__(
        self,
        parameters: Sequence[Parameter] | None = None,
        llm: ChatModel | None = None,
        sampler: str = "tpe",
        *,
        seed: int = 0,
        n_startup_trials: int = 5,
        queue_size: int = 3,
        **settings: Any,
    ) -> None:
        check_sampler(sampler, OPTUNA_SAMPLERS)
        self.llm_part = OptoPrime(None, llm, note=self._search_note, **settings)
        self.search_part = Search(None, sampler, seed=seed, n_startup_trials=n_startup_trials)
        self.queue_size = queue_size
        #: the LLM's numeric suggestions waiting to be evaluated (oldest first)
        self.queue: list[dict[str, Any]] = []
        self._last_from_llm = False
        super().__init__(parameters)

    def set_parameters(self, parameters: Sequence[Parameter]) -> None:
        super().set_parameters(parameters)
        self.llm_part.set_parameters(parameters)
        self.search_part.set_parameters([p for p in parameters if searchable(p)])

    # ----- its parts -------------------------------------------------------------------------------
    @property
    def sampler(self) -> Sampler:
        return self.search_part.sampler

    @property
    def llm_client(self) -> ChatModel | None:
        return self.llm_part.llm_client

    def resize_memory(self, size: int) -> None:
        self.llm_part.resize_memory(size)

    # ----- who proposes what -----------------------------------------------------------------------
    def search_space(self) -> SearchSpace:
        return self.search_part.search_space()

    def llm_names(self) -> list[str]:
        """Trainable parameters the LLM proposes: text, code, json, and numbers without both bounds."""
        searched = set(self.search_space().names)
        return [name for name in self.trainable if name not in searched]

    def unbounded(self) -> list[str]:
        """Numbers left to the LLM because a bound is missing."""
        return unbounded(list(self.trainable.values()))

    def _search_note(self) -> str:
        names = self.search_space().names
        return SEARCH_NOTE.format(names=", ".join(names)) if names else ""

    # ----- evaluations --------------------------------------------------------------------------------
    def observe(self, values: dict[str, Any], score: float | None) -> None:
        self.search_part.observe(values, score)

    # ----- one step ----------------------------------------------------------------------------------
    def step(self, instances: ProblemInstance | Sequence[ProblemInstance], *, max_calls: int | None = None) -> Proposal:
        """The LLM's proposal for its parameters (no call when it has none), then the search's for the
        numbers, with one queued LLM idea for the numbers evaluated as the search's trial now and then."""
        if isinstance(instances, ProblemInstance):
            instances = [instances]
        self._need_trainable()
        space = self.search_space()
        if self.llm_names():
            proposal = self.llm_part.step(instances, max_calls=max_calls)
        else:  # nothing for the LLM: no call at all
            proposal = Proposal(usage=Usage().to_dict())
        current = self.current_values()
        llm_numbers = {name: proposal.accepted.pop(name) for name in space.names if name in proposal.accepted}
        proposed_by = dict.fromkeys(proposal.accepted, "llm")
        self._enqueue(llm_numbers, current, space)
        fixed = None
        if self.queue and not self._last_from_llm:
            fixed = self.queue.pop(0)
        searched = self.search_part.propose(fixed)
        self._last_from_llm = bool(fixed)
        for name in searched:
            proposed_by[name] = "llm" if fixed and name in fixed else "search"
        proposal.accepted.update(searched)
        proposal.proposed_by = proposed_by
        if searched:
            proposal.terminated = False  # the search always has something to try
            note = (
                f"[search] {self.sampler.name} after {len(self.sampler.trials)} evaluations"
                + (f"; the LLM's numbers {fixed} are evaluated as a trial" if fixed else "")
                + (f"; queued LLM numbers: {len(self.queue)}" if self.queue else "")
            )
            proposal.reasoning = f"{proposal.reasoning}\n{note}" if proposal.reasoning else note
        return proposal

    def _enqueue(self, numbers: dict[str, Any], current: dict[str, Any], space: SearchSpace) -> None:
        """Queue the LLM's numeric suggestion unless it changes nothing or was already tried or queued."""
        if not numbers or all(current.get(k) == v for k, v in numbers.items()):
            return
        candidate = {**{k: current.get(k) for k in space.names}, **numbers}
        tried = [space.encode(v) for v, _ in self.sampler.trials]
        if space.encode(candidate) in tried or numbers in self.queue:
            return
        self.queue.append(copy.deepcopy(numbers))
        del self.queue[: -self.queue_size]

    # ----- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The LLM part's memory, and the queue of its numeric ideas (the search rebuilds from `observe`)."""
        state = self.llm_part.state_dict()
        state.update(queue=copy.deepcopy(self.queue), last_from_llm=self._last_from_llm)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.llm_part.load_state_dict(state)
        self.queue = copy.deepcopy(state.get("queue", []))
        self._last_from_llm = bool(state.get("last_from_llm", False))
