"""Credit that never goes missing in DSPy programs: examples must say their inputs; typed outputs stay credited."""

from __future__ import annotations

import dspy
import pydantic
import pytest
from dspy_programs import FIXED_TOOL, agent_policy, celsius_examples, to_fahrenheit

from opto_adapters.dspy import OptoTeleprompter, ProgramTarget
from opto_adapters.dspy.target import ExampleError
from opto_adapters.dspy.testing import rule_lm
from opto_core import Parameter, coverage
from opto_core.kernel.backward import backward
from opto_core.kernel.feedback import Feedback
from opto_core.testing import ScriptedLLM


def test_examples_without_with_inputs_are_refused_by_the_target_and_the_teleprompter(two_same, echo_lm):
    bare = dspy.Example(question="What is 2+2?", answer="4")
    target = ProgramTarget(two_same, lm=echo_lm)
    with pytest.raises(ExampleError, match=r"\.with_inputs\('question'\)"):
        target.inputs_of(bare)
    assert target.inputs_of(bare.with_inputs("question")) == {"question": "What is 2+2?"}
    assert ProgramTarget(two_same, lm=echo_lm, input_keys=["question"]).inputs_of(bare) == {"question": "What is 2+2?"}
    assert target.inputs_of({"question": "q", "answer": "a"}) == {"question": "q"}  # a dict: the program's inputs
    llm = ScriptedLLM(['{"reasoning": "-", "suggestion": {}}'], repeat_last=True)
    teleprompter = OptoTeleprompter(metric=lambda g, p, t=None: 1.0, llm=llm, max_steps=1, batch_size=1)
    with dspy.context(lm=echo_lm):
        with pytest.raises(ExampleError, match=r"trainset\[1\]: the example does not say which fields are inputs"):
            teleprompter.compile(two_same, trainset=[bare.with_inputs("question"), bare])
    assert llm.requests == []  # refused before any optimizer call


def test_apply_values_takes_your_own_parameters(two_same, tmp_path):
    from opto_adapters.dspy import apply_values
    from opto_core import Parameter
    from opto_core.kernel.binding import UnknownParameters
    from opto_core.kernel.values import save_values

    path = tmp_path / "values.json"
    save_values(path, {"first.instructions": "Answer briefly.", "style.suffix": "Be kind."}, {"framework": "dspy"})
    with pytest.raises(UnknownParameters, match=r"parameters=\[\.\.\.\]"):
        apply_values(two_same, path)
    assert two_same.first.signature.instructions != "Answer briefly."  # nothing was written
    mine = Parameter("style.suffix", "text", "Be brief.")
    applied = apply_values(two_same, path, parameters=[mine])
    assert applied == {"first.instructions": "Answer briefly.", "style.suffix": "Be kind."}
    assert mine.value == "Be kind." and two_same.first.signature.instructions == "Answer briefly."


# ----- typed outputs handed on ----------------------------------------------------------------------------------
class Verdict(pydantic.BaseModel):
    grade: int
    reason: str


#: annotation -> (what the LM writes for it, the value DSPy parses)
TYPED = {
    "float": ("37.25", 37.25),
    "int": ("1042", 1042),
    "bool": ("True", True),
    "list[str]": ('["Paris", "Lyon"]', ["Paris", "Lyon"]),
    "Verdict": ('{"grade": 7, "reason": "mostly right"}', Verdict(grade=7, reason="mostly right")),
}


def typed_policy(kind):
    def policy(call):
        if "answer" in call.output_fields:
            return {"answer": TYPED[kind][0]}
        return {"explanation": f"because {call.inputs.get('answer', '?')}"}

    return policy


class SolveThenExplain(dspy.Module):
    """The answer is typed; it is handed on with str() to the explainer and in a Prediction."""

    def __init__(self, kind):
        super().__init__()
        annotation = {"Verdict": Verdict}.get(kind, kind)
        self.solve = dspy.Predict(
            dspy.Signature(
                {
                    "question": dspy.InputField(),
                    "answer": (eval(annotation) if isinstance(annotation, str) else annotation, dspy.OutputField()),
                }
            )
        )
        self.explain = dspy.Predict("question, answer -> explanation")

    def forward(self, question):
        answer = self.solve(question=question).answer
        explained = self.explain(question=question, answer=str(answer))
        return dspy.Prediction(answer=answer, explanation=explained.explanation)


@pytest.mark.parametrize("kind", list(TYPED))
def test_a_typed_output_handed_on_with_str_and_in_a_prediction_stays_credited(kind):
    lm = rule_lm(typed_policy(kind))
    program = SolveThenExplain(kind)
    target = ProgramTarget(program, lm=lm)
    example = dspy.Example(question="How warm is it?").with_inputs("question")
    output, graph = target.run(example)
    assert output.answer == TYPED[kind][1] and type(output.answer) is type(TYPED[kind][1])  # plain values again
    credited = backward(graph, Feedback(0.0, "wrong")).parameter_names
    assert "solve.instructions" in credited and "explain.instructions" in credited
    explain = next(n for n in graph.nodes if n.name == "explain")
    assert explain.meta["inputs"]["answer"] == "typed"  # found by its rendering: str() of the value
    report = coverage(target, [example])
    assert report["solve.instructions"].reached and report["explain.instructions"].reached
    target.apply({"solve.instructions": "Answer with a number only."})
    target.run(example)
    solve_request = next(r for r in reversed(lm.engine.requests) if "answer" in r.output_fields)
    assert solve_request.instructions == "Answer with a number only."


def test_an_unused_parameter_is_reported_unreached():
    lm = rule_lm(typed_policy("float"))
    program = SolveThenExplain("float")
    unused = Parameter("notes.style", "text", "Use British spelling.")
    target = ProgramTarget(program, lm=lm)
    target.bound.add(unused)
    report = coverage(target, [dspy.Example(question="q").with_inputs("question")])
    assert report["solve.instructions"].reached
    assert not report["notes.style"].reached and report["notes.style"].cause == "never_seen"
    assert "notes.style" in report.warning()


class AgentThenExplain(dspy.Module):
    """A ReAct agent with a float answer, explained by a ChainOfThought that receives str(answer)."""

    def __init__(self):
        super().__init__()
        self.agent = dspy.ReAct("question -> answer: float", tools=[to_fahrenheit], max_iters=3)
        self.explain = dspy.ChainOfThought("question, answer -> explanation")

    def forward(self, question):
        answer = self.agent(question=question).answer
        explained = self.explain(question=question, answer=str(answer))
        return dspy.Prediction(answer=answer, explanation=explained.explanation)


def agent_then_explain_policy(call):
    if "explanation" in call.output_fields:
        return {"reasoning": "-", "explanation": f"converted: {call.inputs.get('answer')}"}
    return agent_policy(call)


def test_a_react_agent_with_a_typed_answer_keeps_its_tool_code_credited():
    lm = rule_lm(agent_then_explain_policy)
    target = ProgramTarget(AgentThenExplain(), lm=lm)
    example = celsius_examples([100])[0]
    output, graph = target.run(example)
    assert output.answer == 203.0
    credited = backward(graph, Feedback(0.0, "212 expected")).parameter_names
    code = next(name for name in target.bound.names() if name.endswith("to_fahrenheit.code"))
    assert code in credited and any(name.startswith("agent.") for name in credited)
    report = coverage(target, [example])
    assert report[code].reached and report.complete, report  # the agent's predictors and the explainer too
    instructions = next(
        name for name in target.bound.names() if name.startswith("agent.") and name.endswith(".instructions")
    )
    target.apply({code: FIXED_TOOL, instructions: "Call to_fahrenheit once, then finish."})
    output, _ = target.run(example)
    assert output.answer == 212.0  # the fixed tool ran
    assert any(call.instructions == "Call to_fahrenheit once, then finish." for call in lm.engine.requests[-3:])


class SentenceOnly(SolveThenExplain):
    """The typed answer goes on inside a sentence, and only the explanation is returned."""

    def __init__(self, kind):
        super().__init__(kind)
        self.explain = dspy.ChainOfThought("question, answer -> explanation")

    def forward(self, question):
        answer = self.solve(question=question).answer
        return dspy.Prediction(explanation=self.explain(question=question, answer=f"It is {answer}.").explanation)


@pytest.mark.parametrize("kind", ["float", "int", "list[str]", "Verdict"])
def test_a_typed_value_inside_an_fstring_is_still_credited_when_only_the_explanation_is_returned(kind):
    lm = rule_lm(typed_policy(kind))
    target = ProgramTarget(SentenceOnly(kind), lm=lm)
    example = dspy.Example(question="How warm is it?").with_inputs("question")
    _, graph = target.run(example)
    assert "solve.instructions" in backward(graph, Feedback(0.0, "wrong")).parameter_names  # only through explain
    assert coverage(target, [example])["solve.instructions"].reached


def test_a_bool_inside_a_sentence_is_not_guessed_but_reported_with_the_dspy_fix():
    lm = rule_lm(typed_policy("bool"))
    target = ProgramTarget(SentenceOnly("bool"), lm=lm)
    report = coverage(target, [dspy.Example(question="Is it warm?").with_inputs("question")])
    solve = report["solve.instructions"]
    assert not solve.reached and solve.cause == "off_path"  # "It is True." could come from anywhere: no match
    assert "hand the field on as it is or with str()" in solve.fix and "solve.instructions" in report.warning()
    assert report["explain.predict.instructions"].reached
