"""Every internal of LangChain the adapter touches, and why no public seam works.

``tests/langchain/test_lc_compat.py`` fails when a LangChain release changes one of them;
`TESTED_RANGE` is what it passed on, and the ``langchain`` extra in ``pyproject.toml`` pins the
same range. (The closure cells where ``create_agent`` and ``create_react_agent`` keep their system
prompts, and the function behind a ``@dynamic_prompt`` middleware, are read next to the prompt
reader in `opto_adapters.langchain.prompts_in_code` (``agent_prompt_cell``, ``react_prompt``,
``dynamic_prompt_function``), tested by ``tests/langchain/test_lc_agents.py`` and
``tests/langchain/test_lc_code_prompts.py::test_the_framework_internals_the_prompt_reader_reads``.)
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

#: The langchain-core versions these accessors were tested on.
TESTED_RANGE = ">=1.0,<2"

#: ``BaseTracer.__init__`` keyword that keeps chat-model inputs as messages.
#: Why private: ``BaseTracer`` turns a chat model's input messages into one prompt string unless its
#: private ``_schema_format`` is ``"original+chat"`` (what LangChain's own streaming tracer uses); the
#: graph needs the messages (their ids and tool-call ids link values to the steps that made them).
CHAT_MESSAGES_SCHEMA: dict[str, Any] = {"_schema_format": "original+chat"}


def current_parent_run() -> UUID | None:
    """The run LangChain is executing in this thread or task: the parent its config gives children.

    Why internal: LangChain keeps the config of the runnable it is running in the context variable
    ``langchain_core.runnables.config.var_child_runnable_config`` (set when it enters a runnable)
    and offers no accessor; its callback manager names that run as ``parent_run_id``.
    """
    from langchain_core.runnables.config import var_child_runnable_config

    config = var_child_runnable_config.get()
    if not config:
        return None
    return getattr(config.get("callbacks"), "parent_run_id", None)


__all__ = ["CHAT_MESSAGES_SCHEMA", "TESTED_RANGE", "current_parent_run"]
