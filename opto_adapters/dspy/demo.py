"""The DSPy demo behind ``opto demo --workflow dspy``: a ReAct agent with a buggy tool.

The agent answers "What is 37 C in Fahrenheit?" by calling ``to_fahrenheit``, whose offset is
wrong (23 instead of 32), and it answers with too many decimals because its extract step is not
told how to write the answer. The task LM is rule-based (DSPy's custom engine, no network): it
calls the tool, and follows the extract instructions when they ask for one decimal place. The
optimizer is whatever model ``opto demo`` is given; the metric's feedback names the expected answer.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import dspy

from opto_adapters.dspy.metric import adapt_metric
from opto_adapters.dspy.target import ProgramTarget
from opto_adapters.dspy.testing import LMCall, rule_lm


def to_fahrenheit(celsius: float) -> float:
    """Convert a temperature in Celsius to Fahrenheit."""
    return celsius * 9 / 5 + 23  # planted bug: the offset is 32


def agent_policy(call: LMCall) -> dict[str, Any]:
    """A stand-in for a task model: one tool call, then an answer written as the instructions ask."""
    if "next_tool_name" in call.output_fields:
        if "observation_0" in call.inputs.get("trajectory", ""):
            return {"next_thought": "I have the tool's result.", "next_tool_name": "finish", "next_tool_args": {}}
        numbers = re.findall(r"-?\d+(?:\.\d+)?", call.inputs.get("question", ""))
        return {
            "next_thought": "I will convert with the tool.",
            "next_tool_name": "to_fahrenheit",
            "next_tool_args": {"celsius": float(numbers[0]) if numbers else 0.0},
        }
    found = re.findall(r"\[\[ ## observation_0 ## \]\]\n(.*)", call.inputs.get("trajectory", ""))
    try:
        value = float(found[0])
    except (IndexError, ValueError):
        return {"reasoning": "The tool gave no number.", "answer": "unknown"}
    told = call.instructions + " " + call.output_fields.get("answer", "")
    wants_one_decimal = re.search(r"one decimal|1 decimal|\.1f", told, re.IGNORECASE)
    text = f"{value:.1f}" if wants_one_decimal else f"{value:.4f} degrees Fahrenheit"
    return {"reasoning": "The tool converted the temperature.", "answer": text}


def expected(celsius: float) -> str:
    return f"{celsius * 9 / 5 + 32:.1f}"


def metric(gold: Any, pred: Any, trace: Any = None) -> Any:
    """1.0 for the exact answer (one decimal, no unit), with a sentence saying what is wrong."""
    answer = str(pred.answer).strip()
    if answer == gold.answer:
        return dspy.Prediction(score=1.0, feedback="Correct.")
    numbers = re.findall(r"-?\d+(?:\.\d+)?", answer)
    if numbers and abs(float(numbers[0]) - float(gold.answer)) < 0.05:
        return dspy.Prediction(
            score=0.5,
            feedback=f"The value is right but the answer must be just the number with "
            f"one decimal place, like {gold.answer!r}; got {answer!r}.",
        )
    return dspy.Prediction(
        score=0.0, feedback=f"Wrong value: {gold.question} should be {gold.answer} F; got {answer!r}."
    )


def build_agent() -> Any:
    return dspy.ReAct("question -> answer", tools=[to_fahrenheit], max_iters=3)


def examples(values: tuple[float, ...]) -> list[Any]:
    return [
        dspy.Example(question=f"What is {c:g} C in Fahrenheit?", answer=expected(c)).with_inputs("question")
        for c in values
    ]


def build_demo() -> tuple[ProgramTarget, list[Any], Callable[[Any, Any], Any]]:
    """``(target, trainset, feedback_fn)`` for the loop: the agent with its rule-based LM, and the metric."""
    target = ProgramTarget(build_agent(), lm=rule_lm(agent_policy), name="agent")
    return target, examples((0, 100, 37, -40, 21.5, 15)), adapt_metric(metric)
