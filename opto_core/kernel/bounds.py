"""Bounds on what comes in from outside: text size, JSON nesting, number range, valid Unicode.

Everything an optimization run reads from the world or from a model ends up in three places:
the optimizer's prompt, the run's records (history, checkpoints) and its graphs. One value of
10 MB, a JSON array nested 2,000 deep, a 400-digit number or a lone surrogate (``"\\ud800"``)
must not stop a run, make every later prompt huge, or poison the files it writes. This module
holds the limits and the small functions that apply them; parameters, feedback, graphs and the
optimizer's answer parsing use them.

- `bound_text`: a text longer than its limit keeps its head and tail, and says how long it was
  and its SHA-256 (so two different long texts stay distinguishable, and nothing is silently lost);
- `json_depth`: nesting depth, computed without recursion (so it cannot raise ``RecursionError``);
- `lone_surrogate`: the first lone surrogate in a string (not valid Unicode: it cannot be encoded
  as UTF-8, so a request or file holding it fails later), and `without_surrogates` to show such text;
- `MAX_INT`: the largest whole number a parameter accepts (64-bit, what frameworks store).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterator

#: Longest text kept in a graph node (a tool's output, a model's answer, an exception), in characters.
MAX_GRAPH_TEXT = 50_000
#: Longest feedback text kept (what the feedback function or an exception says about one run).
MAX_FEEDBACK_TEXT = 20_000
#: Longest reasoning kept from an optimizer's answer.
MAX_REASONING_TEXT = 20_000
#: Deepest JSON nesting accepted in a value or an answer.
MAX_JSON_DEPTH = 100
#: Largest magnitude of a whole number a parameter accepts.
MAX_INT = 2**63 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")


def bound_text(text: str, limit: int) -> str:
    """``text`` itself when it fits ``limit`` characters; else its head and tail around a marker
    that keeps the full length and a SHA-256 prefix of the whole text."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    marker = f" …[{len(text) - limit:,} of {len(text):,} characters cut; sha256 {digest}]… "
    keep = max(limit - len(marker), 2)
    head, tail = keep - keep // 2, keep // 2
    return text[:head] + marker + (text[len(text) - tail :] if tail else "")


def json_depth(value: Any, stop_at: int = MAX_JSON_DEPTH + 1) -> int:
    """How deep lists and dicts nest in ``value`` (a scalar is 0), counted up to ``stop_at``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest >= stop_at:
                return deepest
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
    return deepest


def brackets(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """``(index, character)`` of every bracket in JSON-like ``text`` from ``start`` that stands outside a
    quoted string (single or double quotes, backslash escapes); linear."""
    quote = ""
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{()}]":
            yield index, char


def text_depth(text: str, stop_at: int = MAX_JSON_DEPTH + 1) -> int:
    """How deep brackets nest in JSON-like ``text`` (outside strings), counted up to ``stop_at``; linear."""
    depth = deepest = 0
    for _, char in brackets(text):
        if char in "[{(":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest >= stop_at:
                    return deepest
        else:
            depth = max(depth - 1, 0)
    return deepest


def lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in ``value`` (a string, or any string inside JSON), as ``U+D800``; else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found is not None:
                return f"U+{ord(found.group()):04X}"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so it can be shown and written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def safe_repr(value: Any, limit: int = 80) -> str:
    """A short repr that never raises (deep nesting, a huge string, a broken ``__repr__``)."""
    if isinstance(value, str) and len(value) > limit * 4:
        value = value[: limit * 4]
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deep to show>"
    except Exception as exc:  # a broken __repr__
        text = f"<{type(value).__name__} (repr failed: {type(exc).__name__})>"
    text = without_surrogates(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
