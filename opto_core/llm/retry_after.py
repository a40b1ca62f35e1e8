"""How long a server asked us to wait: the ``Retry-After`` of a 429 or 503 answer.

One parser for every place that backs off: the optimizer's own client and the loop's retries of
workflow runs that the model provider refused. Servers say it three ways:

- ``retry-after-ms: 1500`` (OpenAI, Azure: milliseconds, more precise, checked first);
- ``retry-after: 2`` (seconds; some servers send a float);
- ``retry-after: Wed, 21 Oct 2026 07:28:00 GMT`` (an HTTP date).

The headers are found on an exception (``exc.response.headers`` for openai, anthropic, httpx and
requests errors; ``exc.headers``; litellm's ``litellm_response_headers``), a response, or a mapping.
A value that cannot be read, is negative or not finite is ignored (None): the caller's own backoff
applies. Capping is the caller's job, since only it knows its deadline (see `capped`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["capped", "retry_after_seconds"]


def _headers(source: Any) -> Any:
    """The response headers behind ``source`` (an exception, a response, or headers), or None."""
    if isinstance(source, Mapping):
        return source
    candidates: tuple[Any, ...]
    if isinstance(source, BaseException):
        candidates = (
            getattr(getattr(source, "response", None), "headers", None),
            getattr(source, "headers", None),
            getattr(source, "litellm_response_headers", None),
        )
    else:  # a response object
        candidates = (getattr(source, "headers", None),)
    return next((c for c in candidates if c is not None and hasattr(c, "get")), None)


def _get(headers: Any, name: str) -> Any:
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):  # a plain dict is case-sensitive
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    return value


def retry_after_seconds(source: Any, *, now: float | None = None) -> float | None:
    """Seconds the server asked to wait before the next attempt, or None when it said nothing usable.

    ``source`` is an exception, a response or a headers mapping; ``now`` (epoch seconds, default
    the clock) is what an HTTP-date is measured against.
    """
    headers = _headers(source)
    if headers is None:
        return None
    try:
        milliseconds = _get(headers, "retry-after-ms")
        if milliseconds is not None:
            seconds = float(milliseconds) / 1000
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    except (TypeError, ValueError):
        pass
    value = _get(headers, "retry-after")
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def capped(asked: float | None, backoff: float, remaining: float | None) -> float | None:
    """The wait before the next attempt: the server's ``asked`` seconds when it gave some (else
    ``backoff``), or None when that wait would end past the ``remaining`` seconds of the deadline
    (waiting then is pointless: give up now). A ``Retry-After: 100000`` never overruns a deadline."""
    wait = max(backoff, asked) if asked is not None else backoff
    if remaining is not None and wait > remaining:
        return None
    return wait
