"""The two wire formats reduced to one shape; streams reassembled from bytes cut anywhere."""

from __future__ import annotations

import json

import pytest

from opto_core.gateway.wire import (
    CHAT,
    RESPONSES,
    NotUnderstood,
    StreamAssembler,
    api_of,
    parse_answer,
    parse_request,
    set_text,
)
from opto_core.testing.scripted_server import _chat_events, _responses_events, tool_call


def test_endpoints_are_recognised_by_their_path():
    assert api_of("/v1/chat/completions") == CHAT and api_of("/openai/v1/responses/") == RESPONSES
    assert api_of("/v1/embeddings") is None


def test_a_responses_request_reads_like_a_chat_request():
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "f", "description": "d"}],
        "max_output_tokens": 50,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{\"x\": 1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "reasoning", "summary": []},
        ],
    }
    request = parse_request(RESPONSES, body)
    assert [(m.role, m.content, m.call_ids) for m in request.messages] == [
        ("system", "Be brief.", ()),
        ("user", "hi", ()),
        ("assistant", "", ("c1", "c2")),
        ("tool", "one", ("c1",)),
    ]
    assert request.tools == [{"name": "f", "description": "d"}] and request.settings == {"max_output_tokens": 50}
    set_text(body, request.messages[1], "hello")
    set_text(body, request.messages[0], "Be very brief.")
    assert body["input"][0]["content"] == [{"type": "input_text", "text": "hello"}]
    assert body["instructions"] == "Be very brief."


def test_messages_with_several_parts_are_read_but_never_rewritten():
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:..."}}],
            }
        ],
    }
    (message,) = parse_request(CHAT, body).messages
    assert message.content == "look" and not message.rewritable
    with pytest.raises(ValueError):
        set_text(body, message, "other")


@pytest.mark.parametrize("body", [[], {"model": "m"}, {"messages": "hi"}, {"messages": [1]}])
def test_a_request_that_is_not_the_endpoints_shape_is_not_understood(body):
    with pytest.raises(NotUnderstood):
        parse_request(CHAT, body)


@pytest.mark.parametrize("api,events", [(CHAT, _chat_events), (RESPONSES, _responses_events)])
@pytest.mark.parametrize(
    "reply",
    ["Twelve words, split across two chunks of the stream.", tool_call("lookup", call_id="call_9", city="Rome")],
)
def test_a_stream_cut_anywhere_reassembles_into_the_same_answer(api, events, reply):
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "q"}],
        "input": "q",
        "stream_options": {"include_usage": True},
    }
    stream = b"".join(events(body, reply, 0, "m"))
    whole = StreamAssembler(api)
    whole.feed(stream)
    for size in (1, 7, 64):
        pieces = StreamAssembler(api)
        for start in range(0, len(stream), size):
            pieces.feed(stream[start : start + size])
        assert pieces.answer() == whole.answer()
    answer = whole.answer()
    if isinstance(reply, str):
        assert answer.text == reply and answer.tool_calls == []
    else:
        assert answer.tool_calls == [{"id": "call_9", "name": "lookup", "arguments": json.dumps({"city": "Rome"})}]
    assert answer.usage["prompt_tokens"] > 0 and whole.skipped == 0


def test_stream_errors_and_garbage_are_noted_not_raised():
    chat = StreamAssembler(CHAT)
    chat.feed(b"data: {not json}\n\ndata: {\"error\": {\"message\": \"overloaded\"}}\n\ndata: [DONE]\n\n")
    assert chat.skipped == 1 and chat.error == "overloaded"
    responses = StreamAssembler(RESPONSES)
    responses.feed(
        b'event: response.failed\ndata: {"type": "response.failed", "response": {"output": [], '
        b'"error": {"message": "quota"}}}\r\n\r\n'
    )
    assert responses.error == "quota"


def test_answers_of_both_formats():
    chat = parse_answer(
        CHAT,
        {
            "id": "x",
            "model": "m",
            "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
    )
    assert (chat.text, chat.usage) == ("hi", {"prompt_tokens": 3, "completion_tokens": 1})
    responses = parse_answer(
        RESPONSES,
        {
            "output": [
                {"type": "message", "content": [{"type": "output_text", "text": "a"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            ],
            "usage": {"input_tokens": 5, "output_tokens": 2},
        },
    )
    assert responses.text == "a" and responses.tool_calls[0]["id"] == "c" and responses.usage["prompt_tokens"] == 5
    with pytest.raises(NotUnderstood):
        parse_answer(CHAT, {"choices": []})
