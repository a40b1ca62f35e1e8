"""AutoGen adapter (AgentChat 0.7, what `pip install pyautogen` installs): record agent and team
conversations as OPTO graphs and optimize system messages, tool code/descriptions and temperature.

    from opto_adapters.autogen import OptoAgent, wrap_team
    writer = OptoAgent(AssistantAgent("writer", client, system_message="..."))
    await writer.run(task="...")
    writer.last_graph, writer.graphs, writer.parameters()

    target = wrap_team(RoundRobinGroupChat([writer_agent, critic_agent], ...))   # a Target
    opto_core.optimize(target, trainset, feedback_fn, OptoPrime(llm=...))
"""

from __future__ import annotations

try:
    import autogen_agentchat  # noqa: F401
    import autogen_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the AutoGen adapter needs AutoGen AgentChat: pip install 'opto-adapters[autogen]'") from exc

from .agent import OptoAgent, check_agent
from .graph_builder import ConversationLog, build_graph, mark_message, message_node_id
from .parameters import AgentParameters, WriteBackError
from .recorder import RecordingClient
from .target import AgentTarget, TeamTarget, as_target, run_sync, task_of, wrap_team

__all__ = ["AgentParameters", "AgentTarget", "ConversationLog", "OptoAgent", "RecordingClient", "TeamTarget",
           "WriteBackError", "as_target", "build_graph", "check_agent", "mark_message", "message_node_id",
           "run_sync", "task_of", "wrap_team"]
