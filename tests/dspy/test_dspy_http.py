"""One OptoTeleprompter compile step on genuine HTTP traffic (vcrpy cassette).

The task LM is a real ``dspy.LM`` and the optimizer a real ``OpenAIChat``, both pointed at the
embedded llama.cpp server (SmolLM2-135M) when the cassette was recorded; the test replays it
offline. DSPy's default engine (lm15) talks over raw sockets, which vcrpy cannot record, so the
task LM uses DSPy's LiteLLM engine (the OpenAI SDK over httpx). The model is far too small to
judge optimization: this checks the plumbing (requests, responses in the trace, usage, saving).

Re-record: start ``python -m opto_core.llm.local --port 8765`` and run this file with OPTO_RECORD=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not fetch its price list

import dspy

from opto_adapters.dspy import OptoTeleprompter
from opto_core.llm.client import OpenAIChat
from opto_core.llm.local import LOCAL_MODEL

pytest.importorskip("litellm")

KEY = "sk-cassette-SECRET-dspy-0123"
RECORDING = os.environ.get("OPTO_RECORD") == "1"
CASSETTE = Path(__file__).resolve().parents[1] / "cassettes" / "dspy_compile_step.yaml"


pytestmark = pytest.mark.usefixtures("no_openai_env")


def _content(response) -> str:
    body = response["body"]["string"]
    body = body.decode() if isinstance(body, bytes) else body
    return json.loads(body)["choices"][0]["message"]["content"]


def contains_answer(gold, pred, trace=None):
    return float(gold.answer.lower() in str(pred.answer).lower())


def test_one_compile_step_against_the_local_model(cassette, record_base_url, tmp_path):
    task_lm = dspy.LM(
        f"openai/{LOCAL_MODEL}",
        api_base=record_base_url,
        api_key=KEY,
        engine="litellm",
        cache=False,
        temperature=0.0,
        max_tokens=48,
        num_retries=0,
    )
    optimizer_llm = OpenAIChat(record_base_url, KEY, LOCAL_MODEL, max_retries=0, temperature=0, max_tokens=200)
    student = dspy.Predict("question -> answer")
    trainset = [
        dspy.Example(question="What is 2 + 3?", answer="5").with_inputs("question"),
        dspy.Example(question="What is the capital of France?", answer="Paris").with_inputs("question"),
    ]
    teleprompter = OptoTeleprompter(
        metric=contains_answer,
        llm=optimizer_llm,
        max_steps=1,
        batch_size=2,
        num_threads=1,
        token_budget=1200,
        max_errors=10,
        run_dir=str(tmp_path / "run"),
    )
    with cassette("dspy_compile_step") as cass, dspy.context(lm=task_lm):
        before = len(cass) if RECORDING else 0  # re-recording appends to what was loaded
        optimized = teleprompter.compile(student, trainset=trainset)

    pairs = list(zip(cass.requests, cass.responses))[before:]
    if RECORDING:
        assert len(pairs) >= 3, "vcrpy did not see the requests: is the HTTP library patched?"
    else:
        assert cass.all_played and cass.play_count == len(pairs)
    assert all(r.method == "POST" and r.path.endswith("/chat/completions") for r, _ in pairs)
    bodies = [json.loads(r.body) for r, _ in pairs]
    replies = [_content(response) for _, response in pairs]
    is_optimizer = [b["messages"][0]["content"].startswith("You improve a program") for b in bodies]
    task_calls = [b for b, opt in zip(bodies, is_optimizer) if not opt]
    optimizer_calls = [b for b, opt in zip(bodies, is_optimizer) if opt]
    assert task_calls and optimizer_calls
    assert all("Your input fields are:" in b["messages"][0]["content"] for b in task_calls)
    assert all(b["model"] == LOCAL_MODEL and b["temperature"] == 0.0 and b["max_tokens"] == 48 for b in task_calls)
    assert "What is 2 + 3?" in str(task_calls[0]["messages"])
    prompt = optimizer_calls[0]["messages"][-1]["content"]
    assert "(text) predict.instructions=Given the fields `question`, produce the fields `answer`." in prompt
    assert "predict_lm0 = predict.lm(messages=predict_format0, temperature=predict.lm.temperature" in prompt

    # the server's genuine answers are what the traced graph holds as the LM's outputs
    task_replies = {reply for reply, opt in zip(replies, is_optimizer) if not opt}
    graph = json.loads((tmp_path / "run" / "graphs" / "step-1.json").read_text())
    lm_values = [n["value"] for n in graph["nodes"] if n["name"] == "predict.lm" and n["kind"] == "op"]
    assert lm_values and set(lm_values) <= task_replies
    assert any(value[:40] in prompt for value in lm_values)  # ... and the optimizer read them

    step = optimized.opto_history[1]
    assert step["kind"] == "step" and step["proposal"]["attempts"] >= 1
    assert step["usage"]["calls"] == len(optimizer_calls) and step["usage"]["prompt_tokens"] > 0
    assert optimized.opto_report == str(tmp_path / "run") and (tmp_path / "run" / "program.opto.json").exists()
    assert student.signature.instructions == "Given the fields `question`, produce the fields `answer`."
    text = CASSETTE.read_text()
    assert KEY not in text and "SECRET" not in text and "authorization" not in text.lower()
