"""The benchmark's generated tasks: deterministic for a seed, and metrics right on hand-computed cases."""

from __future__ import annotations

import datetime
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` lives at the repository root and is not an installed package
    sys.path.insert(0, str(ROOT))

from bench.tasks import bbh, get_task, numeric, task_names, workflows  # noqa: E402
from opto_core.testing import ScriptedLLM  # noqa: E402

HAS = {
    name: importlib.util.find_spec(module) is not None
    for name, module in {
        "dspy": "dspy",
        "langchain": "langchain_core",
        "autogen": "autogen_agentchat",
        "trace": "opto",
    }.items()
}


# ----- generators ------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(bbh.BBH_TASKS))
def test_bbh_generators_are_deterministic_and_splits_disjoint(task):
    first = bbh.generate(task, 12, seed=3)
    assert first == bbh.generate(task, 12, seed=3)
    assert first != bbh.generate(task, 12, seed=4)
    assert len({e["question"] for e in first}) == 12
    train, val, test = bbh.splits(task, (4, 3, 5), seed=3)
    assert (len(train), len(val), len(test)) == (4, 3, 5)
    questions = [e["question"] for e in train + val + test]
    assert len(set(questions)) == len(questions)


def test_generated_answers_agree_with_independent_checks():
    for e in bbh.generate("word_sorting", 20, 1):
        words = e["question"].split("List: ")[1].split()
        assert e["answer"].split() == sorted(words)
    for e in bbh.generate("dyck_languages", 30, 1):
        stack = []
        for token in e["question"].split("Input: ")[1].split() + e["answer"].split():
            if token in "([{<":
                stack.append(token)
            else:
                assert stack and {"(": ")", "[": "]", "{": "}", "<": ">"}[stack.pop()] == token
        assert not stack and e["answer"]  # the answer closes exactly what is open
    counts = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5}
    for e in bbh.generate("object_counting", 30, 1):
        listing, category = re.match(r"I have (.*)\. How many (.*) do I have\?", e["question"]).groups()
        singulars = {s.split(" ", 1)[1]: s for s, _ in bbh.OBJECTS[category]}
        plurals = {p for _, p in bbh.OBJECTS[category]}
        total = 0
        for item in re.split(r", and |, ", listing):
            number, name = item.split(" ", 1)
            if name in singulars or name in plurals:
                total += counts[number]
        assert str(total) == e["answer"]
    for e in bbh.generate("date_arithmetic", 40, 1):
        m = re.match(
            r"Today is (\d\d)/(\d\d)/(\d{4})\. What is the date (\d+) (day|week|year)s? (from today|ago)", e["question"]
        )
        month, day, year, amount, unit, direction = m.groups()
        today, sign, amount = (
            datetime.date(int(year), int(month), int(day)),
            1 if direction == "from today" else -1,
            int(amount),
        )
        if unit == "year":
            expected = today.replace(year=today.year + sign * amount)
        else:
            expected = today + datetime.timedelta(days=sign * amount * (7 if unit == "week" else 1))
        assert e["answer"] == expected.strftime("%m/%d/%Y")


@pytest.mark.parametrize(
    "task,example,output,score",
    [
        ("boolean_expressions", {"answer": "False"}, " false.", 1.0),
        ("boolean_expressions", {"answer": "False"}, "Answer: False", 1.0),
        ("boolean_expressions", {"answer": "False"}, "True", 0.0),
        ("multistep_arithmetic", {"answer": "67"}, "67", 1.0),  # ((-1 + 2 * 3 - 4) * (5 - -6 + 7 * 8)) = 1 * 67
        ("multistep_arithmetic", {"answer": "-12"}, "The answer is -12.", 1.0),
        ("multistep_arithmetic", {"answer": "67"}, "67.5", 0.0),
        ("word_sorting", {"answer": "apple banana cherry"}, "apple, banana, cherry", 1.0),
        ("word_sorting", {"answer": "apple banana cherry"}, "banana apple cherry", 0.0),
        ("object_counting", {"answer": "8"}, "8", 1.0),
        ("object_counting", {"answer": "8"}, "eight", 0.0),
        ("dyck_languages", {"answer": "] } )"}, "]})", 1.0),
        ("dyck_languages", {"answer": "] } )"}, "] ) }", 0.0),
        ("date_arithmetic", {"answer": "03/05/2021"}, "3/5/2021", 1.0),
        ("date_arithmetic", {"answer": "03/05/2021"}, "03/06/2021", 0.0),
    ],
)
def test_bbh_metric_on_hand_computed_cases(task, example, output, score):
    feedback = bbh.score_answer(task, example, output)
    assert feedback.score == score
    if score == 0.0:
        assert example["answer"] in feedback.text  # the feedback says what was expected


def test_hand_computed_arithmetic_matches_the_generator_format():
    assert eval("((-1 + 2 * 3 - 4) * (5 - -6 + 7 * 8))") == 67  # the format the generator writes
    for e in bbh.generate("multistep_arithmetic", 10, 0):
        assert re.fullmatch(r"\(\(.*\) [-+*] \(.*\)\) =", e["question"])


def test_registry_lists_every_family_and_rejects_unknown_names():
    assert set(bbh.BBH_TASKS) <= set(task_names("bbh"))
    assert {"numeric", "numeric_12"} == set(task_names("numeric"))
    assert {"workflow_python", "workflow_langchain", "workflow_dspy", "workflow_autogen"} == set(task_names("workflow"))
    with pytest.raises(KeyError, match="known tasks"):
        get_task("no_such_task")
    with pytest.raises(ValueError, match="three positive"):
        get_task("numeric").make(sizes=(1, 0, 1))
    task = get_task("object_counting").make(seed=2, quick=True)
    assert (len(task.trainset), len(task.valset), len(task.testset)) == get_task("object_counting").quick_sizes


# ----- the BBH program ---------------------------------------------------------------------------------
def test_bbh_python_program_runs_the_task_model_and_exposes_trace_parameters():
    examples = bbh.generate("boolean_expressions", 2, 0)
    model = ScriptedLLM([f"Some thinking.\nAnswer: {examples[0]['answer']}"], repeat_last=True)
    target = bbh.python_target("boolean_expressions", model)
    names = {p.name: p.kind for p in target.parameters()}
    assert names == {
        "boolean_expressions.prompt_template": "text",
        "boolean_expressions.create_prompt": "code",
        "boolean_expressions.extract_answer": "code",
    }
    output, graph = target.run(examples[0])
    assert output == examples[0]["answer"]
    assert examples[0]["question"] in model.requests[0]["messages"][0]["content"]  # the template was filled
    assert model.requests[0]["temperature"] == 0.0
    assert {"create_prompt", "call_llm", "extract_answer"} <= {n.name for n in graph.nodes if n.kind == "op"}
    # a new extract_answer changes what the program returns
    target.apply(
        {
            "boolean_expressions.extract_answer": 'def extract_answer(prompt_template: str, question: str, response: str) -> str:\n'
            '    """Read the answer out of the LLM\'s response."""\n    return "constant"\n'
        }
    )
    assert target.run(examples[0])[0] == "constant"


# ----- numeric ---------------------------------------------------------------------------------------
def test_numeric_graph_is_deterministic_and_its_targets_are_its_hidden_values():
    graph, train, val, test = numeric.splits((3, 3, 4), seed=5)
    again, train2, _, _ = numeric.splits((3, 3, 4), seed=5)
    assert graph.steps == again.steps and graph.hidden == again.hidden and train == train2
    target = numeric.python_target(graph)
    assert [p.name for p in target.parameters()] == graph.params
    for example in test:
        output, _ = target.run(example)
        assert output == pytest.approx(graph.evaluate(example["a"], example["b"], graph.initial))
    target.apply(dict(graph.hidden))
    for example in test:
        assert numeric.feedback(example, target.run(example)[0]).score == pytest.approx(0.0, abs=1e-6)


def test_numeric_feedback_on_hand_computed_cases():
    too_big = numeric.feedback({"target": 1.5}, 3.2)
    assert too_big.score == pytest.approx(-1.7) and "smaller by 1.7" in too_big.text
    too_small = numeric.feedback({"target": 1.5}, -0.5)
    assert too_small.score == pytest.approx(-2.0) and "larger by 2" in too_small.text
    assert numeric.feedback({"target": 1.5}, "x").score == -100.0
    task = get_task("numeric").make(quick=True)
    assert task.lower_is_better and task.to_metric(-0.25) == 0.25


@pytest.mark.skipif(not HAS["trace"], reason="trace-opt is not installed")
def test_trace_opt_version_computes_the_same_outputs():
    from bench.tasks.traceopt import quiet_litellm

    quiet_litellm()
    graph, _, _, test = numeric.splits((2, 2, 5), seed=1, n_ops=8, n_params=3)
    ours, theirs = numeric.python_target(graph), numeric.trace_program(graph)
    for example in test:
        assert theirs.run(example)[1] == pytest.approx(ours.run(example)[0])


# ----- fix the workflow ----------------------------------------------------------------------------------
def test_workflow_tool_policy_and_metric_on_hand_computed_cases():
    order = "2 x apple @ 1.25; 3 x pear @ 0.80"
    assert workflows.reference_subtotal(order) == 4.9
    assert workflows.order_subtotal(order) == 2.05  # the planted bug: quantities ignored
    with pytest.raises(ValueError, match="not enough values to unpack"):
        workflows.order_subtotal("apple @ 1.25; 2 x pear @ 0.80")  # and no quantity raises
    assert workflows.expected_total(order) == 5.29  # 4.90 * 1.08 = 5.292
    assert workflows.answer_policy("tax of 8%", 4.9, 0.0) == "The total is $5.29."
    assert workflows.answer_policy("tax of 20%", 4.9, 0.0) == "The total is $5.88."
    assert workflows.answer_policy("tax of 8%", 4.9, 1.3) == "The total is about $5."
    assert workflows.answer_policy("no rate", "Error: boom", 0.0).startswith("Sorry")
    example = {"order": order, "expected": 5.29}
    assert workflows.feedback(example, "The total is $5.29.").score == 1.0
    wrong = workflows.feedback(example, "The total is about $5.")
    assert wrong.score == 0.0 and "5.29" in wrong.text and "8% sales tax" in wrong.text
    exec(workflows.FIXED_TOOL, namespace := {})
    assert namespace["order_subtotal"]("apple @ 1.25; 2 x pear @ 0.80") == 2.85


def test_workflow_python_faults_all_matter():
    examples = workflows.generate(8, 0)
    target = workflows.python_target()
    assert {p.name for p in target.parameters()} == {
        "cashier.system_prompt",
        "cashier.temperature",
        "tools.order_subtotal.code",
    }
    fixes = {
        "cashier.system_prompt": workflows.FIXED_PROMPT,
        "cashier.temperature": workflows.FIXED_TEMPERATURE,
        "tools.order_subtotal.code": workflows.FIXED_TOOL,
    }

    def scores() -> list[float]:
        out = []
        for example in examples:
            output, _ = target.run(example)
            out.append(0.0 if isinstance(output, BaseException) else workflows.feedback(example, output).score)
        return out

    assert scores() == [0.0] * 8
    snapshot = target.snapshot()
    target.apply(fixes)
    assert scores() == [1.0] * 8
    for name in fixes:  # leaving any one fault in breaks every answer
        target.restore(snapshot)
        target.apply({k: v for k, v in fixes.items() if k != name})
        assert max(scores()) == 0.0


@pytest.mark.parametrize("framework", list(workflows.FRAMEWORKS))
def test_framework_workflows_fail_as_planted_and_pass_when_fixed(framework):
    if not HAS[framework]:
        pytest.skip(f"{framework} is not installed")
    examples = workflows.generate(5, 0)

    def scores(workflow) -> list[float]:
        out = []
        for example in examples:
            try:
                output = workflow.run(example)
            except Exception:  # LangChain lets the tool's exception through
                output = None
            out.append(0.0 if output is None else workflows.feedback(example, output).score)
        return out

    assert scores(workflows.FRAMEWORKS[framework]()) == [0.0] * 5
    fixed = workflows.FRAMEWORKS[framework]()
    workflows.apply_reference_fix(fixed)
    assert scores(fixed) == [1.0] * 5
    for fault in ("prompt", "tool", "temperature"):
        partly = workflows.FRAMEWORKS[framework]()
        for other in {"prompt", "tool", "temperature"} - {fault}:
            workflows.apply_reference_fix(partly, other)
        assert max(scores(partly)) == 0.0, f"{framework}: fixing all but the {fault} already passes"
