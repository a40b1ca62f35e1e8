"""OptoPrime over genuine HTTP: one full step and a retry after a parse failure, recorded against
the embedded llama.cpp server (SmolLM2-135M) and replayed offline.

Re-record with ``scripts/record_cassettes.sh tests/test_optoprime_http.py``. The model is far too
small to propose good values: these tests check the plumbing (the request, JSON mode, parsing,
validation, the retry, token accounting), never the quality of what it proposes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from opto_core import backward
from opto_core.app.demo import build_python_demo
from opto_core.llm.client import OpenAIChat
from opto_core.llm.local import LOCAL_MODEL
from opto_core.optimizers.optoprime import OptoPrime

KEY = "sk-cassette-SECRET-0123456789"
RECORDING = os.environ.get("OPTO_RECORD") == "1"
CASSETTES = Path(__file__).parent / "cassettes"


pytestmark = pytest.mark.usefixtures("no_openai_env")


def demo_instance():
    target, trainset, feedback_fn, _ = build_python_demo()
    output, graph = target.run(trainset[0])
    return target, backward(graph, feedback_fn(trainset[0], output))


def bodies(cass, name: str, count: int, before: int) -> list[dict]:
    if RECORDING:
        assert len(cass) - before == count
    else:
        assert cass.play_count == count and cass.all_played
    text = (CASSETTES / f"{name}.yaml").read_text()
    assert KEY not in text and "authorization" not in text.lower()
    return [json.loads(r.body) for r in cass.requests[-count:]]


def test_full_optoprime_step(cassette, record_base_url):
    target, instance = demo_instance()
    llm = OpenAIChat(record_base_url, KEY, LOCAL_MODEL, max_retries=0, temperature=0, max_tokens=300, timeout=900)
    optimizer = OptoPrime(target.parameters(), llm, retry_invalid=False)
    with cassette("optoprime_step") as cass:
        before = len(cass)
        proposal = optimizer.step(instance)
    [sent] = bodies(cass, "optoprime_step", 1, before)
    prompt = sent["messages"][1]["content"]
    assert "parse_price0 = parse_price(line=line0, __code=invoice.parse_price.code)" in prompt
    assert "should be 11.25 (10% off), got 6.00" in prompt
    assert sent["response_format"]["type"] == "json_schema"  # the server constrains decoding to the schema
    assert proposal.attempts == 1 and proposal.usage["calls"] == 1
    assert proposal.usage["prompt_tokens"] > 500  # the server's own count of the rendered problem
    names = {p.name for p in target.parameters()}
    assert set(proposal.accepted) <= names and set(proposal.accepted).isdisjoint(proposal.rejected)
    for name, value in proposal.accepted.items():  # whatever the model said, only valid values got through
        assert next(p for p in target.parameters() if p.name == name).validate(value) == value
    # the recorded answer ran into max_tokens mid-JSON (the 135M model repeats itself): that must come
    # back as a parse error, with nothing accepted, never as an exception or a half-read value
    assert proposal.reasoning or proposal.terminated or proposal.rejected or "no JSON object found" in proposal.error


class TruncatingFirstAnswer(OptoPrime):
    """Cuts the first answer to 8 tokens, so that it is genuinely unparseable JSON."""

    def _call(self, messages, usage):
        self.max_answer_tokens = 8 if len(messages) == 2 else 300
        return super()._call(messages, usage)


def test_retry_after_a_parse_failure(cassette, record_base_url):
    target, instance = demo_instance()
    llm = OpenAIChat(record_base_url, KEY, LOCAL_MODEL, max_retries=0, temperature=0, timeout=900)
    optimizer = TruncatingFirstAnswer(target.parameters(), llm)
    with cassette("optoprime_retry") as cass:
        before = len(cass)
        proposal = optimizer.step(instance)
    first, second = bodies(cass, "optoprime_retry", 2, before)
    assert first["max_tokens"] == 8 and second["max_tokens"] == 300
    assert second["messages"][-2]["role"] == "assistant"  # the model sees its own cut answer...
    assert "could not be used" in second["messages"][-1]["content"]  # ...and why it failed
    assert "no JSON object found" in second["messages"][-1]["content"]
    assert proposal.attempts == 2 and proposal.usage["calls"] == 2
