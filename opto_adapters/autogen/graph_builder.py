"""Moved to `opto_core.conversation` (it serves AgentChat and classic AutoGen alike).

Kept as a re-export so that existing imports keep working.
"""

from opto_core.conversation import *  # noqa: F401,F403
from opto_core.conversation import (  # noqa: F401  (private names some callers use)
    _FROM_LLM, _PROMPT_ARGS, EVENT_TYPES, KIND_HANDOFF, KIND_MEMORY, KIND_MESSAGE, KIND_THOUGHT, KIND_TOOL_REQUEST,
    KIND_TOOL_RESULTS, KIND_TOOL_SUMMARY, ROLE_PROMPT, ROLE_SETTING, ROLE_SYSTEM, ROLE_TOOL_CODE, ROLE_TOOL_DESCRIPTION,
    ConversationLog, LLMCallRecord, MessageRecord, ParamsByAgent, PromptItem, ToolRunRecord, Turn, build_graph,
    mark_message, message_node_id, text_of,
)
