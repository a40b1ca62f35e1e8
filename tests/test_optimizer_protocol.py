"""The optimizer protocol: five methods are all the loop needs, the loop never sets an optimizer's
attributes, Search carries no LLM machinery, Hybrid composes OptoPrime and Search, and checkpoints
of optimizer state written before the split still load."""

import json
import logging

import pytest
from scale_scenario import TRAIN, feedback, make, say

from opto_core import LLMOptimizer, Optimizer, Parameter, optimize
from opto_core.optimizers.hybrid import Hybrid
from opto_core.optimizers.opro import OPRO
from opto_core.optimizers.optoprime import OptoPrime, OptoPrimeNoTrace
from opto_core.optimizers.protocol import HasMemory, Proposal
from opto_core.optimizers.search import Search
from opto_core.testing import ScriptedLLM


def test_every_optimizer_meets_the_protocol_and_only_llm_ones_carry_the_llm_machinery():
    params = [Parameter("k", "float", 1.0, lower=0, upper=5)]
    llm = ScriptedLLM([])
    for optimizer in (
        OptoPrime(params, llm),
        OptoPrimeNoTrace(params, llm),
        OPRO(params, llm),
        Search(params, "random"),
        Hybrid(params, llm, "random"),
    ):
        assert isinstance(optimizer, Optimizer), type(optimizer).__name__
    assert isinstance(OptoPrime(params, llm), LLMOptimizer) and isinstance(OPRO(params, llm), LLMOptimizer)
    search = Search(params, "random")
    assert not isinstance(search, LLMOptimizer) and not isinstance(search, HasMemory)
    assert not hasattr(search, "retry_invalid") and not hasattr(search, "memory")
    hybrid = Hybrid(params, llm, "random", memory_size=2)
    assert not isinstance(hybrid, OptoPrime) and not isinstance(hybrid, LLMOptimizer)
    assert isinstance(hybrid.llm_part, OptoPrime) and isinstance(hybrid.search_part, Search)
    assert hybrid.llm_part.memory_size == 2 and hybrid.llm_client is llm


class Frozen:
    """An optimizer with exactly the protocol's five methods, whose attributes nobody may set after
    construction: proof that the loop asks nothing else and changes nothing on it."""

    def __init__(self, replies):
        object.__setattr__(self, "inner", OptoPrime(None, ScriptedLLM(replies)))
        object.__setattr__(self, "calls", [])

    def __setattr__(self, name, value):
        raise AssertionError(f"the loop set optimizer.{name} = {value!r}")

    def set_parameters(self, parameters):
        self.inner.set_parameters(parameters)

    def step(self, instances, *, max_calls=None):
        self.calls.append(max_calls)
        return self.inner.step(instances, max_calls=max_calls)

    def observe(self, values, score):
        pass

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def test_the_loop_needs_only_the_protocol_and_passes_its_call_budget_as_an_argument(tmp_path):
    bad = json.dumps({"reasoning": "", "suggestion": {"k": 1000}})  # out of bounds: a retry would follow
    target, k = make()
    frozen = Frozen([say(2.0), bad, say(3.0)])
    result = optimize(
        target, TRAIN, feedback, frozen, max_steps=5, max_llm_calls=3, batch_size=2, run_dir=str(tmp_path / "run")
    )
    # 3 calls in all: step 1 may spend all 3, step 2 two (its invalid answer is retried), and none is left
    assert frozen.calls == [3, 2] and result.stopped_reason == "max_llm_calls"
    target, k = make()
    budget_of_one = Frozen([bad])
    optimize(target, TRAIN, feedback, budget_of_one, max_steps=1, max_llm_calls=1, batch_size=2)
    assert budget_of_one.calls == [1] and len(budget_of_one.inner.llm.requests) == 1  # no retry past the budget


def test_memory_size_from_the_settings_resizes_through_a_method_and_is_said_when_ignored(caplog):
    target, k = make()
    optimizer = OptoPrime(target.parameters(), ScriptedLLM([say(3.0)]), memory_size=5)
    optimize(target, TRAIN, feedback, optimizer, max_steps=1, batch_size=2, memory_size=1)
    assert optimizer.memory_size == 1
    target, k = make()
    with caplog.at_level(logging.WARNING, logger="opto"):
        optimize(
            target, TRAIN, feedback, Search(target.parameters(), "random"), max_steps=1, batch_size=2, memory_size=3
        )
    assert "memory_size=3 is ignored: Search has no memory" in caplog.text


def test_max_calls_below_one_is_an_error_and_one_call_means_no_retry():
    params = [Parameter("k", "float", 1.0, lower=0, upper=5)]
    bad = json.dumps({"reasoning": "", "suggestion": {"k": 1000}})
    from opto_core.kernel.backward import backward

    target, _ = make()
    output, graph = target.run({"x": 1.0})
    instance = backward(graph, feedback({"x": 1.0}, output))
    optimizer = OptoPrime(target.parameters(), ScriptedLLM([bad, say(3.0)]))
    with pytest.raises(ValueError, match="max_calls must be >= 1"):
        optimizer.step(instance, max_calls=0)
    proposal = optimizer.step(instance, max_calls=1)
    assert proposal.attempts == 1 and "k" in proposal.rejected and len(optimizer.llm.requests) == 1
    assert optimizer.retry_invalid  # the budget is an argument: the optimizer's setting is untouched
    assert isinstance(Search(params, "random").step(), Proposal)


def test_hybrid_state_keeps_the_format_of_checkpoints_written_before_the_split():
    """A checkpoint of Hybrid from before it composed OptoPrime (memory, queue, last_from_llm at the top)."""
    old_state = {
        "memory": [{"values": {"k": 1.0, "p": "x"}, "feedback": "too small", "score": -2.0}],
        "queue": [{"k": 0.7}],
        "last_from_llm": True,
    }
    params = [Parameter("k", "float", 1.0, lower=0, upper=2), Parameter("p", "text", "x")]
    hybrid = Hybrid(params, ScriptedLLM([]), "random")
    hybrid.load_state_dict(json.loads(json.dumps(old_state)))
    assert hybrid.queue == [{"k": 0.7}] and hybrid.llm_part.memory[0].feedback == "too small"
    assert hybrid.state_dict() == old_state
    optoprime = OptoPrime(params, ScriptedLLM([]))
    optoprime.load_state_dict(old_state)  # an OptoPrime checkpoint: its memory, the other keys ignored
    assert optoprime.state_dict() == {"memory": old_state["memory"]}
