"""`OpenAIChat` on genuine traffic: cassettes recorded against the embedded llama.cpp server.

Replayed offline (record mode ``none``). To re-record, run ``scripts/record_cassettes.sh
tests/test_llm_http.py`` (it starts the server on 127.0.0.1:8765 and sets OPTO_RECORD=1).

Each test also checks the cassette itself: that the request really went through vcrpy (openai 3.x
sends with ``httpx2``, not ``httpx``, so a vcrpy without httpx2 support would silently let the
request hit the network while recording nothing) and that no key or authorization header was
stored.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from opto_core.llm.client import LLMError, OpenAIChat
from opto_core.llm.local import LOCAL_MODEL
from opto_core.optimizers.parsing import parse_answer

KEY = "sk-cassette-SECRET-0123456789"
RECORDING = os.environ.get("OPTO_RECORD") == "1"
CASSETTES = Path(__file__).parent / "cassettes"


pytestmark = pytest.mark.usefixtures("no_openai_env")


def make_client(base_url: str, **kwargs) -> OpenAIChat:
    # max_retries=0: a replay mismatch must fail at once, and the recording must hold no retries.
    return OpenAIChat(base_url, KEY, LOCAL_MODEL, max_retries=0, temperature=0, **kwargs)


def check_cassette(cass, name: str, requests: int, before: int) -> list[dict]:
    """The traffic went through vcrpy, every interaction was used, and nothing secret was stored.
    ``before`` is len(cass) when the block started (re-recording appends to the loaded ones)."""
    if RECORDING:
        assert len(cass) - before == requests, "vcrpy did not see the requests: is the HTTP library patched?"
    else:
        assert cass.play_count == requests and cass.all_played
    text = (CASSETTES / f"{name}.yaml").read_text()
    assert KEY not in text and "SECRET" not in text and "authorization" not in text.lower()
    return [json.loads(request.body) for request in cass.requests[-requests:]]


def test_plain_chat(cassette, record_base_url):
    llm = make_client(record_base_url, max_tokens=40)
    with cassette("llm_plain") as cass:
        before = len(cass)
        result = llm.chat(
            [
                {"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
                {"role": "user", "content": "What is the capital of France?"},
            ]
        )
    [sent] = check_cassette(cass, "llm_plain", 1, before)
    assert sent["model"] == LOCAL_MODEL and sent["max_tokens"] == 40 and "response_format" not in sent
    assert result.text.strip() and not result.cached
    assert result.model == LOCAL_MODEL
    # usage comes from the server's response, not our estimate
    response = json.loads(cass.responses[0]["body"]["string"])
    assert (result.prompt_tokens, result.completion_tokens) == (
        response["usage"]["prompt_tokens"],
        response["usage"]["completion_tokens"],
    )
    assert 0 < result.completion_tokens <= 40 and result.prompt_tokens > 10
    assert result.cost_usd == 0.0  # the price table knows the local model: free
    assert llm.usage.calls == 1 and llm.usage.total_tokens == result.prompt_tokens + result.completion_tokens


def test_json_schema_returns_valid_json(cassette, record_base_url):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["name", "age", "hobbies"],
        "additionalProperties": False,
    }
    llm = make_client(record_base_url, max_tokens=120)
    with cassette("llm_json_schema") as cass:
        before = len(cass)
        result = llm.chat(
            [{"role": "user", "content": "Invent a person: their name, age and up to three hobbies."}],
            json_schema=schema,
        )
    [sent] = check_cassette(cass, "llm_json_schema", 1, before)
    # llama.cpp's server supports json_schema (grammar-constrained decoding): no fallback happened
    assert sent["response_format"]["type"] == "json_schema" and llm.format_mode == "json_schema"
    data = json.loads(result.text)
    assert set(data) == {"name", "age", "hobbies"}
    assert isinstance(data["name"], str) and isinstance(data["age"], int)
    assert isinstance(data["hobbies"], list) and len(data["hobbies"]) <= 3
    assert all(isinstance(h, str) for h in data["hobbies"])


def test_answer_text_is_parsed_by_the_optimizer_parser(cassette, record_base_url):
    """json_object mode (the first fallback): the schema travels in the prompt; the project's
    robust parser reads whatever JSON object the model wrote."""
    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "suggestion": {"type": "object", "properties": {"x0": {"type": "number"}}},
        },
        "required": ["reasoning", "suggestion"],
    }
    llm = make_client(record_base_url, max_tokens=150, json_mode="json_object")
    with cassette("llm_parsed") as cass:
        before = len(cass)
        result = llm.chat(
            [
                {"role": "system", "content": "You improve the variables of a program."},
                {
                    "role": "user",
                    "content": "The program returns x0 + 5. Variable x0 = 2. Feedback: the "
                    "output should be 10. Suggest a new value for x0.",
                },
            ],
            json_schema=schema,
        )
    [sent] = check_cassette(cass, "llm_parsed", 1, before)
    assert sent["response_format"] == {"type": "json_object"}
    assert '"suggestion"' in sent["messages"][0]["content"]  # the schema went into the system prompt
    parsed = parse_answer(result.text)
    assert isinstance(parsed, dict) and parsed  # the server guarantees a JSON object; the parser must find it
    assert parsed == json.loads(result.text[result.text.index("{") : result.text.rindex("}") + 1])


@pytest.mark.skipif(RECORDING, reason="checks replay behaviour")
def test_an_unrecorded_request_fails_at_once_instead_of_being_retried(cassette, record_base_url):
    """vcrpy raises inside the HTTP transport. openai 3.x lets that exception through as it is
    (older versions wrapped any exception as APIConnectionError); either way it must fail at once,
    not be retried with backoff as if the network were down."""
    from vcr.errors import CannotOverwriteExistingCassetteException

    llm = OpenAIChat(record_base_url, KEY, LOCAL_MODEL, max_retries=3, retry_wait=(5.0, 5.0))
    with cassette("llm_plain") as cass:
        llm.chat([{"role": "user", "content": "first call: recorded"}])
        started = time.perf_counter()
        with pytest.raises((CannotOverwriteExistingCassetteException, LLMError), match="CannotOverwrite|cassette"):
            llm.chat([{"role": "user", "content": "second call: not recorded"}])  # would wait 15 s if retried
        assert time.perf_counter() - started < 4
    assert cass.play_count == 1 and llm.usage.calls == 1
