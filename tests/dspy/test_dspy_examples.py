"""The DSPy examples run offline and do what their docs say; the CLI demo recipe works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opto_core.app.demo import available_demos, load_recipe
from opto_core.engine.loop import optimize
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_react_agent_example():
    out = run_example("dspy_react_agent.py")
    assert "before: 0%  e.g. '89.6000 degrees Fahrenheit'" in out
    assert "after:  100%  e.g. '98.6'" in out
    assert "student untouched: '89.6000 degrees Fahrenheit'" in out
    assert "step 1: kept=True changed=['extract.predict.instructions', 'tools.to_fahrenheit.code']" in out
    assert "    return celsius * 9 / 5 + 32" in out
    assert "reloaded: '212.0'" in out


def test_two_module_example():
    out = run_example("dspy_two_module.py")
    assert "before: The result is 5. | expected 15" in out
    assert "finalize's inputs come from: ['question#0', 'solve.predict#0']" in out
    assert "after:  15 | expected 15" in out
    assert "finalize.lm.temperature: 1.0 -> 0.0" in out
    assert "score 0.00 -> 1.00" in out


def test_the_dspy_demo_recipe_optimizes_with_any_chat_model(tmp_path):
    assert "dspy" in available_demos()
    target, trainset, feedback_fn, valset = load_recipe("opto_adapters.dspy.demo:build_demo")
    output, graph = target.run(trainset[0])
    assert output.answer == "23.0000 degrees Fahrenheit"  # the planted bug and the missing format rule
    assert any(n.name == "to_fahrenheit" for n in graph.nodes)
    fix = (
        'def to_fahrenheit(celsius: float) -> float:\n    """Convert a temperature in Celsius to Fahrenheit."""\n'
        '    return celsius * 9 / 5 + 32\n'
    )
    llm = ScriptedLLM(
        [
            json.dumps(
                {
                    "reasoning": "offset and format",
                    "suggestion": {
                        "tools.to_fahrenheit.code": fix,
                        "extract.predict.fields.answer.desc": "the number with one decimal place",
                    },
                }
            )
        ]
    )
    result = optimize(
        target,
        trainset,
        feedback_fn,
        OptoPrime(target.parameters(), llm),
        valset,
        max_steps=1,
        batch_size=3,
        run_dir=str(tmp_path / "run"),
        recipe="opto_adapters.dspy.demo:build_demo",
    )
    assert result.initial_score == 0.0 and result.best_score == 1.0
    assert target.run(trainset[0])[0].answer == "32.0"


def test_the_benchmark_defaults_to_dspy_optimizers_on_tasks_that_exist():
    from bench import compare, dspy_compare

    args = dspy_compare.with_defaults(["--quick", "--json"])
    assert args[args.index("--optimizers") + 1] == "opto-dspy,copro,mipro,gepa"
    tasks = compare.resolve_tasks(args[args.index("--tasks") + 1], quick=True)
    assert tasks == ["boolean_expressions", "workflow_dspy"]
    full = compare.resolve_tasks(dspy_compare.with_defaults([])[-1], quick=False)
    assert {"word_sorting", "object_counting", "multistep_arithmetic", "workflow_dspy"} <= set(full)
    assert dspy_compare.with_defaults(["--tasks=word_sorting"]).count("--tasks") == 0
    assert all(compare.applicable(compare.get_task(t).make(seed=0, quick=True), "opto-dspy") for t in tasks)
