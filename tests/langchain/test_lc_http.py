"""One full optimization step of a LangChain chain on genuine HTTP traffic (vcrpy cassette).

The chain's model is langchain-openai's ``ChatOpenAI`` and the optimizer's is ``OpenAIChat``, both
pointed at the embedded llama.cpp server (SmolLM2-135M) when the cassette was recorded; the test
replays it offline. The model is far too small to judge optimization: this checks the plumbing
(what ChatOpenAI sends after a write-back, the trace of real responses, usage, the optimizer's
request), not the quality of the proposal.

Re-record: start ``python -m opto_core.llm.local --port 8765`` and run this file with OPTO_RECORD=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("langchain_openai")

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from opto_adapters.langchain import ChainTarget
from opto_core.engine.loop import optimize
from opto_core.llm.client import OpenAIChat
from opto_core.llm.local import LOCAL_MODEL
from opto_core.optimizers.optoprime import OptoPrime

KEY = "sk-cassette-SECRET-langchain-0123"
RECORDING = os.environ.get("OPTO_RECORD") == "1"
CASSETTE = Path(__file__).resolve().parents[1] / "cassettes" / "langchain_optimize_step.yaml"


pytestmark = pytest.mark.usefixtures("no_openai_env")


def contains_answer(example, output):
    if example["answer"].lower() in output.lower():
        return 1.0, "Correct."
    return 0.0, f"The answer should contain {example['answer']!r}."


def test_one_optimization_step_with_chat_openai(cassette, record_base_url):
    model = ChatOpenAI(
        base_url=record_base_url, api_key=KEY, model=LOCAL_MODEL, temperature=0.7, max_tokens=24, max_retries=0
    )
    prompt = ChatPromptTemplate.from_messages([("system", "You answer questions."), ("human", "{question}")])
    chain = prompt | model | StrOutputParser()
    target = ChainTarget(chain)
    assert [p.name for p in target.parameters()] == [
        "prompt.system",
        "prompt.human",
        "model.temperature",
        "model.max_tokens",
    ]
    optimizer = OptoPrime(
        target.parameters(),
        OpenAIChat(record_base_url, KEY, LOCAL_MODEL, max_retries=0, timeout=900, temperature=0, max_tokens=200),
        token_budget=1500,
    )
    trainset = [
        {"question": "What is 2 + 3?", "answer": "5"},
        {"question": "What is the capital of France?", "answer": "Paris"},
    ]
    with cassette("langchain_optimize_step") as cass:
        before = len(cass) if RECORDING else 0
        output, graph = target.run(trainset[0])
        result = optimize(target, trainset, contains_answer, optimizer, max_steps=1, batch_size=2)

    pairs = list(zip(cass.requests, cass.responses))[before:]
    if RECORDING:
        assert len(pairs) >= 6, "vcrpy did not see the requests: is httpx patched?"
    else:
        assert cass.all_played and cass.play_count == len(pairs)
    assert all(r.method == "POST" and r.path.endswith("/chat/completions") for r, _ in pairs)
    bodies = [json.loads(r.body) for r, _ in pairs]
    is_optimizer = [b["messages"][0]["content"].startswith("You improve a program") for b in bodies]
    task = [b for b, opt in zip(bodies, is_optimizer) if not opt]
    optimizer_calls = [b for b, opt in zip(bodies, is_optimizer) if opt]
    assert task and optimizer_calls

    # what ChatOpenAI sent: the prompt's messages and the model settings in force
    first = task[0]
    assert first["messages"] == [
        {"role": "system", "content": "You answer questions."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    assert first["model"] == LOCAL_MODEL and first["temperature"] == 0.7
    assert first.get("max_completion_tokens", first.get("max_tokens")) == 24

    # the trace of a real response: the reply, the token usage, the model's documentation
    reply = json.loads(pairs[0][1]["body"]["string"])["choices"][0]["message"]["content"]
    assert output == reply and graph.outputs[0].value == reply
    chat = graph["ChatOpenAI#0"]
    assert chat.value["content"] == reply
    assert chat.meta["usage"]["prompt_tokens"] > 0 and graph.meta["usage"]["completion_tokens"] > 0
    assert f"calls the language model {LOCAL_MODEL}" in chat.doc and "temperature=0.7" in chat.doc
    assert {e.id for e in chat.edges} == {"ChatPromptTemplate#0", "param:model.temperature", "param:model.max_tokens"}

    # the optimizer read the trace of the batch
    problem = optimizer_calls[0]["messages"][-1]["content"]
    assert "(float) model.temperature=0.7" in problem and "(text) prompt.system=You answer questions." in problem
    assert "ChatOpenAI0 = ChatOpenAI(messages=ChatPromptTemplate0" in problem

    # whatever the tiny model proposed: valid values were applied (and seen in later requests) or undone
    step = result.history[1]
    proposal = step["proposal"]
    accepted = {k: v for k, v in proposal["accepted"].items() if step["values_before"].get(k) != v}
    after = task[len(trainset) * 2 + 1 :]  # first run + initial evaluation + batch, then the re-evaluation
    if accepted and after:
        if "model.temperature" in accepted:
            assert after[0]["temperature"] == accepted["model.temperature"]
        if "prompt.system" in accepted:
            assert after[0]["messages"][0]["content"] == accepted["prompt.system"]
    final = {p.name: p.value for p in target.parameters()}
    assert final == (step["values_after"] if step["kept"] else step["values_before"])
    assert model.temperature == final["model.temperature"]

    # no secret in the cassette
    assert KEY not in CASSETTE.read_text()
