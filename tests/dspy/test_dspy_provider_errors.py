"""DSPy's LM (litellm) meeting HTTP 500 and 429: the runs are retried, never judged as the program's failures.

A real ``dspy.Predict`` and ``dspy.LM`` (litellm engine) against a scripted OpenAI-compatible server on
127.0.0.1 that fails each question's first two requests (500, then 429 with Retry-After).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not fetch its price list

import dspy

from opto_adapters.dspy import OptoTeleprompter
from opto_core.testing import ScriptedLLM, ScriptedServer, http_error

pytest.importorskip("litellm")


class Flaky:
    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, body):
        question = body["messages"][-1]["content"]
        with self.lock:
            self.attempts[question] += 1
            attempt = self.attempts[question]
        if attempt == 1:
            return http_error(500, "internal error")
        if attempt == 2:
            return http_error(429, "rate limit reached", retry_after="0.1")
        answer = "5" if "2 + 3" in question else "Paris"
        return f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def test_compile_retries_litellm_provider_errors_and_judges_only_answers(tmp_path):
    flaky = Flaky()
    trainset = [
        dspy.Example(question="What is 2 + 3?", answer="5").with_inputs("question"),
        dspy.Example(question="What is the capital of France?", answer="Paris").with_inputs("question"),
    ]
    with ScriptedServer([flaky], repeat_last=True) as server:
        lm = dspy.LM(
            "openai/scripted",
            api_base=server.base_url,
            api_key="scripted",
            engine="litellm",
            cache=False,
            num_retries=0,
        )
        teleprompter = OptoTeleprompter(
            metric=lambda gold, pred, trace=None: float(gold.answer == pred.answer),
            llm=ScriptedLLM([json.dumps({"reasoning": "fine", "suggestion": {}})]),
            max_steps=1,
            batch_size=2,
            num_threads=1,
            run_dir=str(tmp_path / "run"),
        )
        with dspy.context(lm=lm):
            optimized = teleprompter.compile(dspy.Predict("question -> answer"), trainset=trainset)
    initial = optimized.opto_history[0]
    assert initial["eval_score"] == 1.0  # judged on the answers, not on the 500 and 429
    assert sorted(len(r["causes"]) for r in initial["retried"]) == [2, 2]
    assert all(
        r["causes"][0].startswith("HTTP 500") and r["causes"][1].startswith("HTTP 429") for r in initial["retried"]
    )
