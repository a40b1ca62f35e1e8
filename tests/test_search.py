"""Search: the search-only optimizer over float/int/choice parameters, every sampler, no LLM."""

import importlib.util

import pytest

from opto_core.kernel.parameters import Parameter
from opto_core.optimizers.search import SAMPLERS, Sampler, Search, SearchSpace

HAS = {
    "gp": importlib.util.find_spec("bayes_opt") is not None,
    "pso": importlib.util.find_spec("nevergrad") is not None,
    "cmaes": importlib.util.find_spec("cmaes") is not None,
}


def params():
    return [
        Parameter("x", "float", -4.0, lower=-5, upper=5),
        Parameter("n", "int", 15, lower=15, upper=90),
        Parameter("mode", "choice", "b", choices=["a", "b", "c"]),
    ]


def score(v):
    return -((v["x"] - 2.5) ** 2 + (v["n"] - 40) ** 2 / 100 + (0 if v["mode"] == "a" else 1))


def drive(opt, ps, steps):
    """The loop's protocol without the loop: observe the start, then propose, apply, evaluate, observe."""
    values = {p.name: p.value for p in ps}
    opt.observe(values, score(values))
    scores = [score(values)]
    for _ in range(steps):
        proposal = opt.step([])
        for p in ps:
            p.value = p.validate(proposal.accepted.get(p.name, p.value))
        values = {p.name: p.value for p in ps}
        scores.append(score(values))
        opt.observe(values, scores[-1])
    return scores, proposal


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_improves_on_the_start_and_keeps_in_bounds(sampler):
    if not HAS.get(sampler, True):
        pytest.skip(f"{sampler} needs the bench extra")
    ps = params()
    opt = Search(ps, sampler, seed=3)
    scores, proposal = drive(opt, ps, 12)
    assert max(scores) > scores[0] + 5  # the start is far off (x=-4, n=15, mode b): about -43
    assert set(proposal.accepted) == {"x", "n", "mode"} and set(proposal.proposed_by.values()) == {"search"}
    for p in ps:
        p.validate(p.value)
    assert isinstance(ps[1].value, int) and ps[2].value in ("a", "b", "c")


def test_tpe_gets_close_to_the_optimum_in_30_evaluations():
    ps = params()
    scores, _ = drive(Search(ps, "tpe", seed=0), ps, 30)
    assert max(scores) > -1.0  # the optimum is 0 (x=2.5, n=40, mode a)


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random", "gp", "pso"])
def test_same_trials_from_the_evaluations_alone(sampler):
    """The proposal is a function of the observed evaluations: a fresh sampler fed the same list
    (what the loop replays on resume) proposes the same values as the one that lived through them."""
    if not HAS.get(sampler, True):
        pytest.skip(f"{sampler} needs the bench extra")
    ps = params()
    live = Search(ps, sampler, seed=5)
    drive(live, ps, 8)
    rebuilt = Search(params(), sampler, seed=5)
    for values, s in live.sampler.trials:
        rebuilt.observe(values, s)
    rebuilt.set_parameters(ps)
    assert rebuilt.step([]).accepted == live.step([]).accepted


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown sampler 'bogus'; the samplers are: tpe, cmaes, random, gp, pso"):
        Search(params(), "bogus")
    with pytest.raises(ValueError, match="missing on: k"):
        Search([Parameter("k", "float", 1.0, lower=0)], "tpe")
    with pytest.raises(ValueError, match="nothing to search"):
        Search([Parameter("p", "text", "hi")], "tpe")
    Search([Parameter("k", "float", 1.0), Parameter("n", "int", 20, lower=15, upper=90)][1:], "tpe")


def test_unscored_evaluations_and_values_outside_the_space_teach_nothing():
    sampler = Sampler("random", seed=0)
    sampler.observe({"x": 1.0, "n": 20, "mode": "a"}, None)
    sampler.observe({"x": 1.0, "n": 20, "mode": "a"}, float("nan"))
    assert sampler.trials == []
    space = SearchSpace(params())
    assert space.encode({"x": 9.0, "n": 20, "mode": "a"}) is None and space.encode({"x": 1.0}) is None
    assert space.encode({"x": 1.0, "n": 20, "mode": "c"}) == {"mode": 2, "n": 20, "x": 1.0}


def test_the_first_trial_is_the_current_value():
    """Before any scored evaluation the sampler proposes the starting point itself, never a blind guess."""
    ps = params()
    search = Search(ps, "random", seed=1)
    start = {p.name: p.value for p in ps}
    assert search.step([]).accepted == start
    search.observe(start, score(start))
    assert search.sampler.trials[0] == (start, score(start))
    assert search.step([]).accepted != start  # from then on it searches


def test_a_short_run_never_ends_worse_than_it_started():
    """The loop evaluates the start first and the sampler learns it as trial 1; every candidate worse
    than the start is rolled back, so the best values of a short run are the start or better."""
    from opto_core import FunctionTarget, op, optimize

    temperature = Parameter("llm.temperature", "float", 0.3, lower=0.0, upper=2.0)
    k = Parameter("retriever.k", "int", 4, lower=1, upper=16)

    @op
    def answer(question, temperature, k):
        return -abs(temperature - 0.3) - abs(k - 4) / 10  # the start is the best setting

    target = FunctionTarget(lambda question: answer(question, temperature, k), [temperature, k])
    search = Search(target.parameters(), "tpe", seed=0)
    result = optimize(
        target, [{"question": "q"}], lambda example, output: output, search, valset=[{"question": "q"}], max_steps=3
    )
    assert search.sampler.trials[0] == ({"llm.temperature": 0.3, "retriever.k": 4}, 0.0)
    assert result.best_score == result.initial_score == 0.0
    assert result.best_values == {"llm.temperature": 0.3, "retriever.k": 4}
    assert (temperature.value, k.value) == (0.3, 4)
    assert any(not r["kept"] for r in result.history[1:])  # the search did try other values
