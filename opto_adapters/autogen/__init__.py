"""AutoGen adapter (AgentChat 0.7, what `pip install pyautogen` installs): record agent and team
conversations as OPTO graphs and optimize system messages, tool code/descriptions and temperature.

    from opto_adapters.autogen import OptoAgent, wrap_team
    writer = OptoAgent(AssistantAgent("writer", client, system_message="..."))
    await writer.run(task="...")
    writer.last_graph, writer.graphs, writer.parameters()

    target = wrap_team(RoundRobinGroupChat([writer_agent, critic_agent], ...))   # a Target
    opto_core.optimize(target, trainset, feedback_fn, OptoPrime(llm=...))
    target.save_values("values.json")          # later, in production:
    apply_values(freshly_built_team, "values.json")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from opto_core.kernel.conversation import ConversationLog, build_graph, mark_message, message_node_id

# AgentChat names load on first use, so that `opto_adapters.autogen.ag2` (classic AutoGen, the `ag2`
# extra) imports without AgentChat installed.
_AGENTCHAT = {
    "OptoAgent": "agent",
    "check_agent": "agent",
    "adopt_running_loop": "eventloop",
    "AgentParameters": "parameters",
    "bound_parameters": "parameters",
    "parameters_of": "parameters",
    "WriteBackError": "bindings",
    "RecordingClient": "tracing",
    "AgentTarget": "target",
    "TeamTarget": "target",
    "apply_values": "deploy",
    "as_target": "target",
    "bound_of": "target",
    "run_sync": "target",
    "task_of": "target",
    "wrap_team": "target",
}

__all__ = [
    "AgentParameters",
    "AgentTarget",
    "ConversationLog",
    "OptoAgent",
    "RecordingClient",
    "TeamTarget",
    "WriteBackError",
    "adopt_running_loop",
    "apply_values",
    "as_target",
    "bound_of",
    "bound_parameters",
    "build_graph",
    "check_agent",
    "mark_message",
    "message_node_id",
    "parameters_of",
    "run_sync",
    "task_of",
    "wrap_team",
]


def __getattr__(name: str) -> Any:
    if name not in _AGENTCHAT:
        raise AttributeError(f"module 'opto_adapters.autogen' has no attribute {name!r}")
    try:
        import autogen_agentchat  # noqa: F401
        import autogen_core  # noqa: F401
    except ImportError as exc:  # depends on the environment
        raise ImportError(
            "the AutoGen AgentChat adapter needs AutoGen AgentChat: pip install 'opto-adapters[autogen]'"
        ) from exc
    value = getattr(import_module(f"{__name__}.{_AGENTCHAT[name]}"), name)
    globals()[name] = value
    return value
