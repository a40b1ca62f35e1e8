"""OptoPrime and the baselines with a scripted model: parsing, validation, retry, memory."""

import json

import pytest

from opto_core import Feedback, Graph, Parameter, backward
from opto_core.optimizers.opro import OPRO
from opto_core.optimizers.optoprime import OptoPrime, OptoPrimeNoTrace
from opto_core.optimizers.parsing import ParseError, is_terminate, parse_answer
from opto_core.testing import ScriptedLLM

CODE = "def tool(x):\n    return x + 1\n"


def problem():
    g = Graph()
    k = g.add_parameter(Parameter("k", "float", 1.0, lower=0, upper=10))
    code = g.add_parameter(Parameter("tool.code", "code", CODE))
    x = g.add("input", "x", 2.0)
    mid = g.add("op", "tool", 3.0, parents=[(code.id, "__code"), (x.id, "x")], doc="[tool] adds one")
    out = g.add("op", "mul", 3.0, parents=[(mid.id, "a"), (k.id, "b")])
    g.mark_output(out.id)
    return backward(g, Feedback(-7.0, "expected 10.0"))


def params():
    return [Parameter("k", "float", 1.0, lower=0, upper=10), Parameter("tool.code", "code", CODE)]


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "r", "suggestion": {"k": 2}}',
        'Here is my answer:\n```json\n{"reasoning": "r", "suggestion": {"k": 2}}\n```\nDone.',
        'Sure! {"reasoning": "r", "suggestion": {"k": 2}} Hope this helps {with braces}.',
        "{'reasoning': 'r', 'suggestion': {'k': 2}}",
        '```\n{"reasoning": "a } brace in a string", "suggestion": {"k": 2}}\n```',
    ],
)
def test_parse_answer_forms(text):
    answer = parse_answer(text)
    assert answer["suggestion"] == {"k": 2}


def test_parse_failures_and_terminate():
    for text in ("", "no json here", "{broken: ", "[1, 2]"):
        with pytest.raises(ParseError):
            parse_answer(text)
    assert is_terminate("TERMINATE") and is_terminate("`TERMINATE`.") and is_terminate('"TERMINATE"')
    assert not is_terminate('{"reasoning": "we could TERMINATE but", "suggestion": {"k": 3}}')


def test_one_step_updates_several_parameters_at_once():
    new_code = "def tool(x):\n    return x + 2\n"
    llm = ScriptedLLM([json.dumps({"reasoning": "both", "suggestion": {"k": 2.5, "tool.code": new_code}})])
    opt = OptoPrime(params(), llm)
    proposal = opt.step(problem())
    assert proposal.accepted == {"k": 2.5, "tool.code": new_code} and not proposal.rejected
    assert proposal.attempts == 1 and proposal.usage["calls"] == 1
    prompt = llm.requests[0]["messages"][1]["content"]
    assert "#Code" in prompt and "tool0 = tool(__code=tool.code, x=x0)" in prompt and "expected 10.0" in prompt
    assert llm.requests[0]["json_schema"]["properties"]["suggestion"]["properties"]["k"] == {"type": "number"}


def test_invalid_values_are_sent_back_once_with_reasons():
    llm = ScriptedLLM(
        [
            json.dumps(
                {"reasoning": "r", "suggestion": {"k": 50, "tool.code": "def tool(x, y):\n    return 1\n", "ghost": 1}}
            ),
            json.dumps({"reasoning": "fixed", "suggestion": {"k": 5}}),
        ]
    )
    proposal = OptoPrime(params(), llm).step(problem())
    retry = llm.requests[1]["messages"][-1]["content"]
    assert "k: 50.0 is above the upper bound 10" in retry
    assert "signature must stay" in retry and "'ghost' is not a variable" in retry
    assert proposal.accepted == {"k": 5.0} and proposal.attempts == 2
    assert "signature must stay" in proposal.rejected["tool.code"] and "ghost" in proposal.rejected
    assert "k" not in proposal.rejected and proposal.usage["calls"] == 2


def test_parse_failure_retry_then_give_up_cleanly():
    llm = ScriptedLLM(["I think k should be bigger.", "still no json"])
    proposal = OptoPrime(params(), llm).step(problem())
    assert proposal.accepted == {} and "no JSON object" in proposal.error and proposal.attempts == 2
    assert "no JSON object found" in llm.requests[1]["messages"][-1]["content"]


def test_terminate_changes_nothing_and_is_not_retried():
    llm = ScriptedLLM(["TERMINATE"])
    proposal = OptoPrime(params(), llm).step(problem())
    assert proposal.terminated and proposal.accepted == {} and len(llm.requests) == 1


def test_loose_key_matching():
    llm = ScriptedLLM([json.dumps({"reasoning": "", "suggestion": {"Tool_Code": "def tool(x):\n    return x\n"}})])
    assert "tool.code" in OptoPrime(params(), llm).step(problem()).accepted


def test_memory_holds_the_last_k_steps():
    llm = ScriptedLLM([json.dumps({"reasoning": "", "suggestion": {"k": 1 + i}}) for i in range(4)])
    ps = params()
    opt = OptoPrime(ps, llm, memory_size=2)
    for i in range(4):
        opt.step(problem())
        ps[0].value = float(1 + i)
    assert len(opt.memory) == 2 and [m.values["k"] for m in opt.memory] == [2.0, 3.0]
    last = llm.requests[-1]["messages"][1]["content"]
    memory = last.split("#Memory")[1]
    assert memory.count('{"variables"') == 2  # steps 2 and 3 (k=1.0, k=2.0); step 1 fell out
    restored = OptoPrime(params(), ScriptedLLM([]), memory_size=2)
    restored.load_state_dict(json.loads(json.dumps(opt.state_dict())))
    assert [m.values for m in restored.memory] == [m.values for m in opt.memory]
    off = OptoPrime(params(), ScriptedLLM(['{"suggestion": {}}']), memory_size=0)
    off.step(problem())
    assert off.memory == [] and "#Memory" not in off.llm.requests[0]["messages"][1]["content"]


def test_baselines_see_less():
    opro_llm = ScriptedLLM(['{"reasoning": "", "suggestion": {"k": 3}}'])
    assert OPRO(params(), opro_llm).step(problem()).accepted == {"k": 3.0}
    prompt = opro_llm.requests[0]["messages"][1]["content"]
    assert "score -7" in prompt and "#Code" not in prompt and "expected 10.0" not in prompt
    ablation_llm = ScriptedLLM(['{"reasoning": "", "suggestion": {"k": 3}}'])
    OptoPrimeNoTrace(params(), ablation_llm).step(problem())
    prompt = ablation_llm.requests[0]["messages"][1]["content"]
    assert "expected 10.0" in prompt and "(float) k=1.0" in prompt
    assert "tool0 = tool(" not in prompt and "(float) x0=2.0" not in prompt
