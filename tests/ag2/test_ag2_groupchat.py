"""A three-agent AG2 GroupChat with "auto" speaker selection: selector calls, control edges, exact graph."""

from __future__ import annotations

from ag2_helpers import group_chat, group_reply

from opto_adapters.autogen.ag2 import AG2Target


def test_group_chat_with_auto_selection_gives_the_exact_graph(server):
    server.replies = [group_reply] * 6
    manager, user, agents = group_chat(server)
    target = AG2Target(lambda task: user.initiate_chat(manager, message=task, silent=True).summary, [manager])
    output, graph = target.run("Write about cats.")
    assert output.startswith("Final: cats purr when content.")
    run = graph.meta["run_id"]
    task, draft, critique, final = (f"msg:{run}-{i}" for i in range(1, 5))
    ops = [(n.id, n.value) for n in graph.nodes if n.kind == "op"]
    assert ops == [
        ("chat_manager.llm#0", "writer"),
        ("writer.llm#0", "Draft: cats purr."),
        (draft, "Draft: cats purr."),
        ("chat_manager.llm#1", "critic"),
        ("critic.llm#0", "Critique: say why."),
        (critique, "Critique: say why."),
        ("chat_manager.llm#2", "editor"),
        ("editor.llm#0", "Final: cats purr when content. TERMINATE"),
        (final, "Final: cats purr when content. TERMINATE"),
    ]
    assert graph[task].kind == "input" and graph["output#0"].parents == [final]
    selection = [
        "param:chat_manager.temperature",
        "param:chat_manager.select_speaker_message_template",
        "param:chat_manager.select_speaker_prompt_template",
    ]
    for index, seen in enumerate([[task], [task, draft], [task, draft, critique]]):
        call = graph[f"chat_manager.llm#{index}"]
        assert call.meta["role"] == "selector" and call.meta["settings"] == {"temperature": 0.0}
        data = [e.id for e in call.edges if e.via == "data"]
        context = [e.id for e in call.edges if e.via == "context" and e.id.startswith("msg:")]
        assert data == selection and context == seen  # the rendered templates are context inputs
    for name, selector, seen in (
        ("writer", 0, [task]),
        ("critic", 1, [task, draft]),
        ("editor", 2, [task, draft, critique]),
    ):
        call = graph[f"{name}.llm#0"]
        assert [(e.id, e.via) for e in call.edges] == [
            (f"param:{name}.system_message", "data"),
            *[(m, "context") for m in seen],
            (f"param:{name}.temperature", "data"),
            (f"chat_manager.llm#{selector}", "control"),
        ]
    assert graph[draft].parents == ["writer.llm#0"] and graph[final].parents == ["editor.llm#0"]
    assert graph.meta["agents"] == ["critic", "editor", "writer"] and graph.meta["llm_calls"] == 6
    assert "user has no llm_config: no model parameters" in target.notes[0]


def test_round_robin_group_chat_has_no_selector_calls(server):
    server.replies = [group_reply] * 3
    manager, user, agents = group_chat(server, "round_robin")  # before the manager copies the GroupChat
    target = AG2Target(lambda task: user.initiate_chat(manager, message=task, silent=True).summary, [manager])
    output, graph = target.run("Write about cats.")
    assert [n.name for n in graph.nodes if n.op_type == "llm_call"] == ["writer.llm", "critic.llm", "editor.llm"]
    assert not [e for n in graph.nodes for e in n.edges if e.via == "control"]
    assert not [p for p in target.parameters() if "select_speaker" in p.name]
    assert any("round_robin" in note for note in target.notes)
