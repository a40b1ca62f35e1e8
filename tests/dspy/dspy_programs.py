"""Real DSPy programs and rule-based task policies shared by the DSPy adapter tests."""

from __future__ import annotations

import re

import dspy


def echo_policy(call):
    """Every output field says which field it is and echoes the inputs, so data flow is visible."""
    joined = " | ".join(f"{k}={v}" for k, v in call.inputs.items())
    return {name: f"{name}<{joined}>" for name in call.output_fields}


class TwoSame(dspy.Module):
    """Two predictors with the identical signature ``question -> answer``: a draft, then a rewrite."""

    def __init__(self):
        super().__init__()
        self.first = dspy.Predict("question -> answer")
        self.second = dspy.Predict("question -> answer")

    def forward(self, question):
        draft = self.first(question=question)
        return self.second(question=draft.answer)


class CotThenPredict(dspy.Module):
    """ChainOfThought, then a Predict whose input is built with an f-string from the first answer."""

    def __init__(self):
        super().__init__()
        self.think = dspy.ChainOfThought("question -> answer")
        self.polish = dspy.Predict("draft -> answer")

    def forward(self, question):
        first = self.think(question=question)
        return self.polish(draft=f"Draft answer: {first.answer}")


# ----- a ReAct agent with a buggy tool ------------------------------------------------------------------
def to_fahrenheit(celsius: float) -> float:
    """Convert a temperature in Celsius to Fahrenheit."""
    return celsius * 9 / 5 + 23  # planted bug: the offset is 32


FIXED_TOOL = (
    'def to_fahrenheit(celsius: float) -> float:\n'
    '    """Convert a temperature in Celsius to Fahrenheit."""\n'
    '    return celsius * 9 / 5 + 32\n'
)


def agent_policy(call):
    """Calls the tool once with the number in the question, then finishes; the answer is the observation."""
    if "next_tool_name" in call.output_fields:
        trajectory = call.inputs.get("trajectory", "")
        if "observation_0" in trajectory:
            return {"next_thought": "I have the result.", "next_tool_name": "finish", "next_tool_args": {}}
        number = float(re.findall(r"-?\d+(?:\.\d+)?", call.inputs["question"])[0])
        return {
            "next_thought": "Convert with the tool.",
            "next_tool_name": "to_fahrenheit",
            "next_tool_args": {"celsius": number},
        }
    observation = re.findall(r"\[\[ ## observation_0 ## \]\]\n(.*)", call.inputs.get("trajectory", ""))
    return {"reasoning": "The tool gave the result.", "answer": observation[0] if observation else "unknown"}


def celsius_examples(values=(0, 100, 37, -40, 20, 15)):
    return [
        dspy.Example(question=f"What is {c} C in Fahrenheit?", answer=f"{c * 9 / 5 + 32:.1f}").with_inputs("question")
        for c in values
    ]


def fahrenheit_metric(gold, pred, trace=None):
    try:
        return float(abs(float(pred.answer) - float(gold.answer)) < 0.01)
    except ValueError:
        return 0.0
