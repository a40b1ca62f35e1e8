"""Every private attribute of classic AutoGen (AG2) the adapter touches, one accessor each, and why.

AG2 0.14 (PyPI ``autogen``) has public seams for almost everything the adapter writes
(``update_system_message``, ``register_for_execution``, ``llm_config``, a runtime logger); these
two reads have none. ``tests/ag2/test_ag2_compat.py`` fails when an AG2 release changes them;
`TESTED_RANGE` is what it passed on, and the ``ag2`` extra in ``pyproject.toml`` pins the same range.
"""

from __future__ import annotations

from typing import Any

#: The ``autogen`` (AG2 classic) versions these accessors were tested on.
TESTED_RANGE = ">=0.14,<1"


def reply_configs(manager: Any) -> list[dict[str, Any]]:
    """The entries of a ``GroupChatManager``'s reply-function list (each with ``config`` and ``init_config``).

    Why private: ``register_reply(config=groupchat)`` stores a shallow copy of the GroupChat in
    ``_reply_func_list[i]["config"]`` and ``run_chat`` reads that copy; no public API lists the
    copies, and a speaker-selection template written on the GroupChat alone would not be used.
    """
    return manager._reply_func_list


def registered_origin(registered: Any) -> Any:
    """The function a registered tool wraps (the tool itself when it is no wrapper).

    Why private: ``register_for_execution`` stores a wrapper (chat-context injection, result
    serialization) that keeps the user's function only in ``_origin`` (``_wrap_function``).
    """
    return getattr(registered, "_origin", registered)


__all__ = ["TESTED_RANGE", "registered_origin", "reply_configs"]
