"""Hybrid: OptoPrime for text/code, a sampler for numbers, through the real loop with a scripted LLM."""

import json

import pytest

from opto_core.engine.loop import optimize
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.trace import op
from opto_core.optimizers.hybrid import Hybrid
from opto_core.testing import ScriptedLLM

NOTHING = json.dumps({"reasoning": "no idea", "suggestion": {}})


def workflow(style_trainable=True):
    style = Parameter("style", "text", "Answer.", trainable=style_trainable)
    temperature = Parameter("temperature", "float", 1.8, lower=0.0, upper=2.0)
    top_k = Parameter("top_k", "int", 90, lower=1, upper=100)

    @op
    def generate(style, temperature, top_k):
        """Answers with these settings."""
        return {"style": style, "temperature": temperature, "top_k": top_k}

    def program(q):
        return generate(style, temperature, top_k)

    return FunctionTarget(program, [style, temperature, top_k], input_keys=["q"])


def feedback(example, output):
    error = abs(output["temperature"] - 0.3) * 10 + abs(output["top_k"] - 20) / 10
    return -error, f"error {error:.2f}: temperature {output['temperature']}, top_k {output['top_k']}"


def run(llm, steps, run_dir=None, style_trainable=True, **kw):
    target = workflow(style_trainable)
    opt = Hybrid(target.parameters(), llm, seed=1)
    result = optimize(target, [{"q": "hi"}], feedback, opt, max_steps=steps, batch_size=1, run_dir=run_dir, **kw)
    return result, opt


def test_numbers_improve_with_no_llm_skill():
    llm = ScriptedLLM([NOTHING], repeat_last=True)
    result, opt = run(llm, 15)
    assert result.initial_score < -20 and result.best_score > -5
    steps = [h for h in result.history if h.get("kind") == "step"]
    assert len(llm.requests) == len(steps)  # one LLM call a step: the text parameter is the LLM's
    for record in steps:
        assert record["proposal"]["proposed_by"] == {"temperature": "search", "top_k": "search"}
    assert "tuned by a search method" in llm.requests[0]["messages"][1]["content"]


def test_no_llm_call_without_text_or_code():
    llm = ScriptedLLM([])  # any call raises
    result, opt = run(llm, 10, style_trainable=False)
    assert llm.requests == [] and result.usage["calls"] == 0
    assert result.best_score > result.initial_score + 10
    assert len(opt.sampler.trials) == 11  # the start and every step's evaluation


def test_an_llm_number_is_enqueued_and_evaluated():
    idea = json.dumps({"reasoning": "lower the temperature", "suggestion": {"temperature": 0.3, "style": "Be brief."}})
    llm = ScriptedLLM([idea, NOTHING], repeat_last=True)
    result, opt = run(llm, 3)
    first = result.history[1]
    assert first["proposal"]["proposed_by"] == {"style": "llm", "temperature": "llm", "top_k": "search"}
    assert first["candidate_values"]["temperature"] == 0.3 and first["candidate_values"]["style"] == "Be brief."
    assert any(values["temperature"] == 0.3 and s == first["eval_score"] for values, s in opt.sampler.trials)
    # the next step is the sampler's again (the LLM's ideas never take two steps in a row)
    assert result.history[2]["proposal"]["proposed_by"]["temperature"] == "search"


def test_llm_numbers_queue_and_alternate_with_the_search():
    opt = Hybrid(
        [Parameter("t", "float", 1.0, lower=0, upper=2), Parameter("p", "text", "x")],
        ScriptedLLM([json.dumps({"reasoning": "r", "suggestion": {"t": v}}) for v in (0.5, 0.6, 0.7)]),
    )
    opt.observe({"t": 1.0, "p": "x"}, -1.0)
    from opto_core.kernel.backward import backward
    from opto_core.kernel.feedback import Feedback
    from opto_core.kernel.graph import Graph

    g = Graph()
    t = g.add_parameter(opt.params["t"])
    out = g.add("op", "f", 1.0, parents=[(t.id, "t")])
    g.mark_output(out.id)
    instance = backward(g, Feedback(-1.0, "too high"))
    sources = []
    for _ in range(3):
        proposal = opt.step(instance)
        sources.append((proposal.proposed_by["t"], proposal.accepted["t"]))
        opt.params["t"].value = proposal.accepted["t"]
        opt.observe({"t": proposal.accepted["t"], "p": "x"}, -abs(proposal.accepted["t"] - 0.3))
    assert sources[0] == ("llm", 0.5) and sources[1][0] == "search" and sources[2] == ("llm", 0.6)
    assert opt.queue == [{"t": 0.7}] and opt.state_dict()["queue"] == [{"t": 0.7}]


def test_resume_gives_the_same_trials_as_an_uninterrupted_run(tmp_path):
    whole, opt_whole = run(ScriptedLLM([NOTHING], repeat_last=True), 10)
    first, _ = run(ScriptedLLM([NOTHING], repeat_last=True), 5, run_dir=str(tmp_path / "run"))
    assert first.steps == 5
    resumed, opt_resumed = run(ScriptedLLM([NOTHING], repeat_last=True), 10, run_dir=str(tmp_path / "run"))
    assert opt_resumed.sampler.trials == opt_whole.sampler.trials
    assert [h.get("candidate_values") for h in resumed.history] == [h.get("candidate_values") for h in whole.history]


def test_bad_input():
    with pytest.raises(ValueError, match="unknown sampler 'gp'; the samplers are: tpe, cmaes, random"):
        Hybrid([Parameter("t", "float", 1.0, lower=0, upper=2)], ScriptedLLM([]), sampler="gp")
    # a number without bounds is left to the LLM (documented), and said so
    opt = Hybrid([Parameter("t", "float", 1.0), Parameter("n", "int", 3, lower=1, upper=9)], ScriptedLLM([]))
    assert opt.unbounded() == ["t"] and opt.llm_names() == ["t"] and opt.search_space().names == ["n"]
