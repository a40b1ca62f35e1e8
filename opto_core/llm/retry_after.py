"""``Retry-After``: how long a server asks us to wait, read once for every client.

A server under load answers 429 or 503 with ``Retry-After`` in seconds (``"7"``) or as an HTTP
date, and some add ``retry-after-ms`` (OpenAI). The value is the server's to choose and can be
anything: ``100000``, a date next year, ``"-5"``, ``"soon"``. `retry_after` reads it (None when
absent or unreadable) and `wait_for_retry` caps it, so no server can stretch a call past its
deadline: when the wait asked for does not fit in the time left, the caller gives up at once
instead of sleeping into the deadline.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

#: The longest wait any server may ask for (seconds), deadline or not.
MAX_RETRY_AFTER = 60.0


def retry_after(headers: Mapping[str, Any] | Any | None, now: float | None = None) -> float | None:
    """Seconds the server asks to wait, from ``retry-after-ms`` or ``retry-after``; None if absent or junk."""
    if headers is None:
        return None
    get = getattr(headers, "get", None)
    if get is None:
        return None
    milliseconds = _number(get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    raw = get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    try:
        return max(0.0, moment.timestamp() - (time.time() if now is None else now))
    except (OverflowError, OSError, ValueError):
        return None


def _number(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        value = float(str(raw).strip()[:32])
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def wait_for_retry(backoff: float, asked: float | None, remaining: float | None) -> float | None:
    """The wait before the next attempt: the backoff, or the server's ``Retry-After`` when it asks for
    more (at most `MAX_RETRY_AFTER`). None when that wait does not fit in the ``remaining`` seconds
    of the deadline: the caller should stop now."""
    wait = backoff if asked is None else max(backoff, min(asked, MAX_RETRY_AFTER))
    if remaining is not None and (wait >= remaining or (asked is not None and asked > remaining)):
        return None
    return wait
