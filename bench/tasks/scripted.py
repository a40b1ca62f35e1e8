"""Scripted stand-ins for the two models of a comparison, for offline tests of the harness.

They answer by rule from what they are sent (no network, deterministic), in the formats each
caller expects: plain replies for the task programs, DSPy's ChatAdapter fields for DSPy
programs and DSPy's prompt optimizers, a fenced instruction for GEPA's reflection, and
OptoPrime's JSON for ours and Trace's. They exercise the plumbing; they say nothing about
quality.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from opto_core.testing import ScriptedLLM


def _fields_requested(system: str) -> list[str]:
    if "Your output fields are:" not in system:
        return []
    section = system.split("Your output fields are:", 1)[1].split("All interactions", 1)[0]
    return re.findall(r"\d+\. `(\w+)`", section)


def task_model(answers: dict[str, str], *, wrong_every: int = 3) -> ScriptedLLM:
    """Answers the questions it knows (``question -> answer``); every ``wrong_every``-th question
    (in sorted order) gets a wrong answer, so scores are neither 0 nor 1."""
    ordered = sorted(answers)
    wrong = {q for i, q in enumerate(ordered) if wrong_every and i % wrong_every == 0}

    def reply(messages: list[dict[str, str]]) -> str:
        text = "\n".join(m["content"] for m in messages)
        question = next((q for q in ordered if q in text), None)
        answer = "unknown" if question is None else ("wrong" if question in wrong else answers[question])
        fields = _fields_requested(messages[0]["content"]) if messages[0]["role"] == "system" else []
        if fields:  # a DSPy program (ChatAdapter)
            values = {f: (answer if f == "answer" else "Let me think.") for f in fields}
            return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items()) + "\n\n[[ ## completed ## ]]"
        return f"Answer: {answer}"

    return ScriptedLLM([reply], repeat_last=True, model="scripted-task")


def optimizer_model(suggest: dict[str, Any] | None = None) -> ScriptedLLM:
    """Answers optimizer prompts: OptoPrime JSON (suggesting ``suggest`` for the names it finds in the
    prompt), DSPy ChatAdapter fields for COPRO/MIPROv2's proposers, a fenced block for GEPA."""
    suggest = suggest or {}

    def reply(messages: list[dict[str, str]]) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        text = "\n".join(m["content"] for m in messages)
        fields = _fields_requested(system)
        if fields:
            values = {
                f: (
                    "Answer with the final answer only, in the format the question asks for."
                    if "instruction" in f
                    else "A short summary."
                )
                for f in fields
            }
            return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items()) + "\n\n[[ ## completed ## ]]"
        if "```" in text and "suggestion" not in text:  # GEPA's reflection prompt asks for a fenced instruction
            return "```\nAnswer with the final answer only, in the format the question asks for.\n```"
        found = {name: value for name, value in suggest.items() if name in text}
        return json.dumps({"reasoning": "scripted", "suggestion": found})

    return ScriptedLLM([reply], repeat_last=True, model="scripted-optimizer")


def answers_of(*example_lists: Iterable[dict[str, Any]]) -> dict[str, str]:
    return {e["question"]: str(e["answer"]) for examples in example_lists for e in examples if "answer" in e}
