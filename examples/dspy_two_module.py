"""Optimize a two-module DSPy program (ChainOfThought, then Predict) with OptoTeleprompter (offline).

`solve` works out a multi-step sum; `finalize` writes the final answer from the draft. Both are
wrong at first: `solve` stops after the first operation, and `finalize` wraps the number in a
sentence the metric does not accept. The metric's feedback says what was expected, and OptoPrime,
reading the trace of both modules, rewrites both predictors' instructions and sets `finalize`'s
temperature in one step. Compare with the same program under dspy.MIPROv2 / dspy.GEPA in docs/dspy.md.

Runs offline: the task LM is a rule-based stand-in (DSPy's custom engine) that follows the
instructions it is given, and the optimizer's answer is scripted. Pass --base-url/--model (or
set OPENAI_BASE_URL / OPENAI_API_KEY) to let a real model optimize.
"""

import argparse
import json
import re

import dspy

from opto_adapters.dspy import DSPyTracer, OptoTeleprompter
from opto_adapters.dspy.testing import LMCall, rule_lm
from opto_core.testing import ScriptedLLM


class SolveThenFinalize(dspy.Module):
    def __init__(self):
        super().__init__()
        self.solve = dspy.ChainOfThought("question -> answer")
        self.finalize = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.solve(question=question)
        return self.finalize(question=question, draft=draft.answer)


def task_policy(call: LMCall) -> dict:
    """A stand-in task model: it computes every step only when told to, and writes a bare number only
    when told to."""
    if "draft" in call.inputs:  # finalize
        number = re.findall(r"-?\d+", call.inputs["draft"])[-1]
        bare = re.search(r"only the number|just the number", call.instructions, re.IGNORECASE)
        return {"answer": number if bare else f"The result is {number}."}
    tokens = re.findall(r"-?\d+|plus|minus|times", call.inputs["question"])
    value, steps = int(tokens[0]), list(zip(tokens[1::2], tokens[2::2]))
    all_steps = re.search(r"every (operation|step)|step by step", call.instructions, re.IGNORECASE)
    for op, number in steps if all_steps else steps[:1]:
        value = {"plus": value + int(number), "minus": value - int(number), "times": value * int(number)}[op]
    return {"reasoning": f"Computed {len(steps) if all_steps else 1} step(s).", "answer": str(value)}


def make_examples(specs):
    examples = []
    for start, *rest in specs:
        words, value = [str(start)], start
        for op, number in zip(rest[::2], rest[1::2]):
            words += [op, str(number)]
            value = {"plus": value + number, "minus": value - number, "times": value * number}[op]
        examples.append(dspy.Example(question=f"What is {' '.join(words)}?", answer=str(value)).with_inputs("question"))
    return examples


def metric(gold, pred, trace=None):
    if pred.answer.strip() == gold.answer:
        return dspy.Prediction(score=1.0, feedback="Correct.")
    return dspy.Prediction(
        score=0.0,
        feedback=f"{gold.question} The answer must be exactly {gold.answer!r} (the number only); got {pred.answer!r}.",
    )


SCRIPTED = {
    "solve.predict.instructions": "Solve the arithmetic question step by step: apply every operation in order, "
    "from left to right, and give the final number.",
    "finalize.instructions": "Reply with only the number from the draft, no words.",
    "finalize.lm.temperature": 0.0,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    if args.base_url or args.model:
        from opto_core import OpenAIChat

        llm = OpenAIChat(base_url=args.base_url, model=args.model)
    else:
        llm = ScriptedLLM(
            [
                json.dumps(
                    {
                        "reasoning": "solve applies only the first operation; finalize adds words.",
                        "suggestion": SCRIPTED,
                    }
                ),
                json.dumps({"reasoning": "Nothing left to fix.", "suggestion": {}}),
            ],
            repeat_last=True,
        )

    trainset = make_examples(
        [
            (2, "plus", 3, "times", 4),
            (10, "minus", 4, "plus", 1),
            (7, "times", 2, "minus", 5),
            (1, "plus", 1, "plus", 1),
        ]
    )
    valset = make_examples([(6, "minus", 1, "times", 3), (4, "times", 4, "minus", 6)])
    program = SolveThenFinalize()
    with dspy.context(lm=rule_lm(task_policy)):
        tracer = DSPyTracer(program)
        with dspy.context(callbacks=[tracer]):
            print("before:", program(question=valset[0].question).answer, "| expected", valset[0].answer)
        graph = tracer.graphs[-1]
        print("trace:", " -> ".join(n.name for n in graph.nodes if n.kind == "op"))
        print(
            "finalize's inputs come from:",
            sorted({e.id for e in graph["finalize.format#0"].edges if not e.id.startswith("param:")}),
        )

        optimized = OptoTeleprompter(metric=metric, llm=llm, max_steps=args.steps, num_threads=2).compile(
            program, trainset=trainset, valset=valset
        )
        print("after: ", optimized(question=valset[0].question).answer, "| expected", valset[0].answer)
    for name in SCRIPTED:
        print(f"{name}: {program_value(program, name)!r} -> {program_value(optimized, name)!r}")
    print(
        f"score {optimized.opto_history[0]['eval_score']:.2f} -> {optimized.score:.2f}; "
        f"{len(optimized.candidate_programs)} candidates; run directory: {optimized.opto_report}"
    )


def program_value(program, name):
    from opto_adapters.dspy import ProgramParameters

    return ProgramParameters(program).values()[name]


if __name__ == "__main__":
    main()
