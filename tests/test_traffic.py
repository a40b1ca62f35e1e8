"""The UXSim traffic tasks: deterministic per seed, the grid's optimum, worse plans score worse."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("uxsim")

from bench.tasks import get_task, traffic  # noqa: E402


def test_the_simulation_is_deterministic_per_seed_and_the_seed_matters():
    a = traffic.simulate_fixed(traffic.scenario(0), 30, 15)
    assert a == traffic.simulate_fixed(traffic.scenario(0), 30, 15)
    assert traffic.scenario(0) != traffic.scenario(1)
    assert traffic.simulate_fixed(traffic.scenario(1), 30, 15)["average_delay"] != a["average_delay"]


def test_a_worse_plan_scores_worse():
    scene = traffic.scenario(0)  # east-west carries about twice the north-south demand
    good = traffic.feedback({}, traffic.simulate_fixed(scene, 30, 15))
    starved = traffic.feedback({}, traffic.simulate_fixed(scene, 15, 90))
    assert starved.score < good.score - 20
    assert "Average delay" in good.text and "Mean queue per approach" in good.text and "W " in good.text


def test_the_grid_optimum_is_what_the_grid_says():
    refs = traffic.references(0, False, step=25, refine=1)  # a coarse grid keeps the test short
    best = refs["grid_best_plan"]
    assert refs["grid_best_delay"] == traffic.simulate_fixed(traffic.scenario(0), *best)["average_delay"]
    for plan in ((15, 15), (40, 40), (65, 65), (90, 90), (15, 90), (90, 15)):  # points of that grid
        assert traffic.simulate_fixed(traffic.scenario(0), *plan)["average_delay"] >= refs["grid_best_delay"]
    assert refs["equal_split_delay"] >= refs["grid_best_delay"]


def test_the_tasks_run_through_their_traced_workflows():
    task = get_task("traffic").make(seed=0)
    target = task.python_target(None)
    assert [(p.name, p.kind, p.lower, p.upper) for p in target.parameters()] == [
        ("green_ew", "int", 15, 90),
        ("green_ns", "int", 15, 90),
    ]
    output, graph = target.run(task.trainset[0])
    assert task.feedback(task.trainset[0], output).score == -output["average_delay"]
    controlled = get_task("traffic_controller").make(seed=0)
    target = controlled.python_target(None)
    (code,) = target.parameters()
    assert code.kind == "code"
    fixed, _ = target.run(controlled.trainset[0])
    target.apply(
        {"controller.code": traffic.function_source(traffic.actuated).replace("def actuated", "def fixed_controller")}
    )
    actuated, graph = target.run(controlled.trainset[0])
    assert actuated["plan"] != fixed["plan"] and actuated["average_delay"] != fixed["average_delay"]
    assert {p[0] for p in fixed["plan"]} == {30}  # the starting controller keeps the equal split


def test_uxsim_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "uxsim", None)
    assert "pip install 'opto-adapters[bench]'" in traffic.available()
    with pytest.raises(ImportError, match=r"opto-adapters\[bench\]"):
        traffic.python_target()
