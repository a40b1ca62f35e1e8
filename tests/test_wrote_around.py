"""Nothing changes around the optimizer: a run that writes a parameter behind its back (an alias,
``__init__``, a JSON value changed in place) fails as "wrote around the optimizer", the step rolls
back, the write is never saved, and ``approve=`` sees exactly what is applied."""

from __future__ import annotations

import json

import pytest

from opto_core import Parameter, optimize
from opto_core.engine.guard import ValueGuard, same
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

PROMPT = Parameter("prompt", "text", "Answer:")
CONFIG = Parameter("config", "json", {"words": ["a"]}, trainable=False)


@op(trainable=True, parameter_name="answer.code")
def answer(question: str) -> str:
    return PROMPT.value + " " + question + " " + " ".join(CONFIG.value["words"])


HEAD = "def answer(question: str) -> str:\n"
TAIL = "    return PROMPT.value + ' ' + question + ' ' + ' '.join(CONFIG.value['words'])\n"
PAYLOADS = {
    "alias write": (HEAD + "    p = PROMPT\n    p.value = 'INJECTED'\n" + TAIL, "strict"),
    "__init__": (HEAD + "    PROMPT.__init__('prompt', 'text', 'INJECTED')\n" + TAIL, "permissive"),
    "json in place": (HEAD + "    words = CONFIG.value['words']\n    words.append('INJECTED')\n" + TAIL, "strict"),
}


def rewards_injection(example, output):
    """A feedback function the payloads satisfy: without the guard each would be kept as an improvement."""
    return 1.0 if "INJECTED" in output else 0.0


@pytest.fixture(autouse=True)
def _originals():
    yield
    PROMPT.__init__("prompt", "text", "Answer:")
    CONFIG.__init__("config", "json", {"words": ["a"]}, trainable=False)
    answer.code.value = answer.source


@pytest.mark.parametrize("isolation", ["none", "process"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_a_write_around_the_optimizer_fails_the_runs_and_is_never_kept(payload, isolation, tmp_path):
    """In this process the loop's guard catches the write; in a worker process the worker does."""
    source, policy = PAYLOADS[payload]
    target = FunctionTarget(lambda question: answer(question), [answer, PROMPT, CONFIG], input_keys=["question"])
    seen: list[dict] = []

    def approve(changes):
        seen.extend({"name": c.name, "new": c.new} for c in changes)
        return True

    llm = ScriptedLLM([json.dumps({"reasoning": "r", "suggestion": {"answer.code": source}})], repeat_last=True)
    result = optimize(
        target,
        [{"question": "q"}],
        rewards_injection,
        OptoPrime(target.parameters(), llm),
        max_steps=1,
        run_dir=str(tmp_path / "run"),
        code_policy=policy,
        approve=approve,
        isolation=isolation,
    )
    step = result.history[1]
    assert step["kept"] is False and "wrote around the optimizer" in step["decision"]
    assert "wrote around the optimizer" in step["wrote_around"]
    assert PROMPT.value == "Answer:" and PROMPT.name == "prompt" and CONFIG.value == {"words": ["a"]}
    assert result.best_values["prompt"] == "Answer:"
    checkpoint = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert "INJECTED" not in json.dumps([checkpoint["current"], checkpoint["best"]])
    assert [s["name"] for s in seen] == ["answer.code"]  # approve saw the code change, and nothing else
    assert target.run({"question": "q"})[0] == "Answer: q a"


def test_the_guard_compares_deeply_and_exactly():
    assert same({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]})
    assert not same({"a": [1]}, {"a": [1.0]}) and not same([True], [1]) and not same({"a": 1}, {"a": 1, "b": 2})
    target = FunctionTarget(lambda question: answer(question), [answer, PROMPT, CONFIG], input_keys=["question"])
    guard = ValueGuard(target)
    expected = guard.expect()
    assert guard.changes(expected) == {}
    CONFIG.value["words"].append("x")
    PROMPT.__init__("renamed", "text", "Answer:")
    changes = guard.changes(expected)
    assert set(changes) == {"config", "prompt"} and "name" in changes["prompt"]
    guard.restore(expected)
    assert guard.changes(expected) == {} and CONFIG.value == {"words": ["a"]} and PROMPT.name == "prompt"


@op
def scale(x: float, r: float) -> float:
    return x * r


def test_approve_sees_exactly_what_is_applied(tmp_path):
    rate = Parameter("rate", "float", 0.5, lower=0.0, upper=1.0)
    target = FunctionTarget(lambda x: scale(x, rate), [rate], input_keys=["x"])
    seen = []

    def approve(changes):
        seen.extend((c.name, c.new) for c in changes)
        return True

    llm = ScriptedLLM([json.dumps({"reasoning": "r", "suggestion": {"rate": "0.75"}})], repeat_last=True)
    result = optimize(
        target, [{"x": 2.0}], lambda e, o: o, OptoPrime(target.parameters(), llm), max_steps=1, approve=approve
    )
    assert seen == [("rate", 0.75)]  # the validated value, not the model's string
    assert result.history[1]["candidate_values"] == {"rate": 0.75} and rate.value == 0.75
