"""Recording a two-agent AG2 chat with a tool: exact nodes and edges, failures, and no change to the chat."""

from __future__ import annotations

import copy

from ag2_helpers import calculator_pair, chat_of
from autogen import runtime_logging
from autogen.logger.base_logger import BaseLogger

from opto_adapters.autogen.ag2 import AG2Target
from opto_adapters.autogen.ag2 import tracing as ag2_recording
from opto_core.kernel.graph import META_KEYS, Graph
from opto_core.testing.scripted_server import tool_call


def edges(graph: Graph, node_id: str) -> list[tuple[str, str, str]]:
    return [(e.id, e.arg, e.via) for e in graph[node_id].edges]


def test_two_agent_chat_with_a_tool_gives_the_exact_graph(server):
    server.script(tool_call("buggy_add", "call_1", a=2, b=3), "The sum is -1. TERMINATE")
    assistant, user = calculator_pair(server)
    target = AG2Target(chat_of(assistant, user), [assistant, user])
    output, graph = target.run({"question": "2+3?"})
    assert output == "The sum is -1. "
    run = graph.meta["run_id"]
    m = [f"msg:{run}-{i}" for i in range(1, 5)]
    assert [(n.id, n.kind) for n in graph.nodes] == [
        (m[0], "input"),
        ("param:assistant.system_message", "parameter"),
        ("param:assistant.tools.buggy_add.description", "parameter"),
        ("param:assistant.temperature", "parameter"),
        ("assistant.llm#0", "op"),
        (m[1], "op"),
        ("param:user.tools.buggy_add.code", "parameter"),
        ("user.tool.buggy_add#0", "op"),
        (m[2], "op"),
        ("assistant.llm#1", "op"),
        (m[3], "op"),
        ("output#0", "output"),
    ]
    params = [
        ("param:assistant.system_message", "system_message", "data"),
        ("param:assistant.tools.buggy_add.description", "tool buggy_add", "data"),
        ("param:assistant.temperature", "temperature", "data"),
    ]
    assert edges(graph, "assistant.llm#0") == [params[0], (m[0], "prompt[1]", "context"), *params[1:]]
    assert edges(graph, m[1]) == [("assistant.llm#0", "produced_by", "data")]
    assert edges(graph, "user.tool.buggy_add#0") == [
        (m[1], "arguments", "data"),
        ("param:user.tools.buggy_add.code", "code", "data"),
    ]
    assert edges(graph, m[2]) == [("user.tool.buggy_add#0", "call call_1", "data")]
    # the tool's result is a producer of the call that read it; the rest of the prompt is context
    assert edges(graph, "assistant.llm#1") == [
        params[0],
        (m[0], "prompt[1]", "context"),
        (m[1], "prompt[2]", "context"),
        (m[2], "prompt[3]", "data"),
        *params[1:],
    ]
    assert edges(graph, m[3]) == [("assistant.llm#1", "produced_by", "data")]
    assert graph["output#0"].parents == [m[3]]
    assert graph["user.tool.buggy_add#0"].value == "-1" and graph["user.tool.buggy_add#0"].meta["call_id"] == "call_1"
    assert graph["assistant.llm#0"].meta["settings"] == {"temperature": 0.3}
    assert set(META_KEYS) <= set(graph.meta) and graph.meta["framework"] == "autogen"
    assert graph.meta["adapter"] == "opto_adapters.autogen.ag2" and graph.meta["usage"]["prompt_tokens"] > 0
    assert Graph.from_json(graph.to_json()) == graph
    assert not ag2_recording.is_installed()  # the runtime logger is gone after the chat


def test_the_messages_are_the_same_with_and_without_recording(server):
    script = [tool_call("buggy_add", "call_1", a=2, b=3), "The sum is -1. TERMINATE"]
    server.script(*script, *script)
    assistant, user = calculator_pair(server)
    bare = user.initiate_chat(assistant, message="2+3?", max_turns=3, silent=True)
    bare_requests = copy.deepcopy(server.requests)
    assistant, user = calculator_pair(server)
    target = AG2Target(chat_of(assistant, user), [assistant, user])
    target.run({"question": "2+3?"})
    recorded = user.chat_messages[assistant]
    assert recorded == bare.chat_history and len(recorded) == 4
    assert server.requests[2:] == bare_requests  # byte-for-byte the same requests reach the model


def test_a_failing_conversation_gives_an_exception_node_not_a_crash(server):
    server.fail_with = (400, "model exploded")
    assistant, user = calculator_pair(server)
    target = AG2Target(chat_of(assistant, user), [assistant, user])
    output, graph = target.run({"question": "2+3?"})
    assert isinstance(output, Exception) and "model exploded" in str(output)
    errors = graph.of_kind("exception")
    assert [n.name for n in errors] == ["assistant.llm"]  # the failed request, logged by AG2 as an APIError
    assert errors[0].id in [p for o in graph.outputs for p in o.parents]
    assert "model exploded" in graph.meta["error"]
    server.fail_with = None
    server.script(tool_call("buggy_add", a=1, b=1), "0 TERMINATE")
    output, graph = target.run({"question": "1+1?"})  # the next conversation works
    assert output == "0 " and not graph.of_kind("exception")


def test_a_logger_the_user_started_keeps_receiving_calls(server):
    class Counting(BaseLogger):
        def __init__(self):
            self.calls = 0

        def start(self):
            return "mine"

        def log_chat_completion(self, *args, **kwargs):
            self.calls += 1

        def log_new_agent(self, *args):
            pass

        def log_event(self, *args, **kwargs):
            pass

        def log_new_wrapper(self, *args):
            pass

        def log_new_client(self, *args):
            pass

        def log_function_use(self, *args):
            pass

        def stop(self):
            pass

        def get_connection(self):
            return None

    mine = Counting()
    runtime_logging.start(logger=mine)
    try:
        server.script(tool_call("buggy_add", a=2, b=3), "-1 TERMINATE")
        assistant, user = calculator_pair(server)
        _, graph = AG2Target(chat_of(assistant, user), [assistant, user]).run({"question": "2+3?"})
        assert mine.calls == 2 and graph.meta["llm_calls"] == 2
        assert runtime_logging.autogen_logger is mine and runtime_logging.logging_enabled()
    finally:
        runtime_logging.stop()
