"""Values as short, readable text: for error messages, approvals, reports, drawings and graphs.

Two ways to make a value short, for two purposes: `clip` keeps the start (an error message: the
start says most), `opto_core.kernel.graph.shorten` keeps both ends and says how much it cut (a
value an optimizer reads). And one way to read any value as text, `as_text`: a string as it is,
anything else as JSON.
"""

from __future__ import annotations

import json
from typing import Any, Callable


def clip(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 3`` characters and ``...``."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 80) -> str:
    """The start of ``repr(value)``, for messages that name a value."""
    return clip(repr(value), limit)


def as_text(value: Any, *, indent: int | None = None, default: Callable[[Any], Any] = repr) -> str:
    """A string as it is; anything else as JSON (``default`` for what JSON cannot hold), else its repr."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent, default=default)
    except (TypeError, ValueError):
        return repr(value)
