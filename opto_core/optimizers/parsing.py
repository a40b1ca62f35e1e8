"""Reading an optimizer LLM's answer: JSON, however it was wrapped.

Models wrap JSON in code fences, write prose around it, use Python's single quotes, or answer
``TERMINATE`` (Trace's word for "change nothing"). Trace 0.1.3.8 treats TERMINATE *anywhere*
as stop, even inside the reasoning; here it counts only as the whole answer.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON|python)?\s*\n?(.*?)```", re.DOTALL)


class ParseError(ValueError):
    """The answer holds no usable JSON object; the message says what was wrong."""


def is_terminate(text: str) -> bool:
    """True when the whole answer is TERMINATE (quotes, punctuation and a code fence allowed)."""
    return re.sub(r"[`'\".!\s]|json", "", text, flags=re.IGNORECASE).upper() == "TERMINATE"


def parse_answer(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (fenced, surrounded by prose, or with single quotes)."""
    stripped = text.strip()
    if not stripped:
        raise ParseError("the answer was empty")
    candidates = [m.group(1).strip() for m in _FENCE.finditer(stripped)] + [stripped]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            value = json.loads(candidate)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        for start in [m.start() for m in re.finditer(r"\{", candidate)][:50]:
            try:
                value, _ = decoder.raw_decode(candidate, start)
                if isinstance(value, dict):
                    return value
            except json.JSONDecodeError:
                pass
            end = _matching_brace(candidate, start)
            if end is not None:
                try:
                    value = ast.literal_eval(candidate[start:end + 1])
                    if isinstance(value, dict):
                        return value
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    pass
    raise ParseError("no JSON object found in the answer; answer with one JSON object "
                     '{"reasoning": "...", "suggestion": {"<variable>": <new value>}}')


def _matching_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one at ``start``, skipping quoted strings."""
    depth = 0
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
        elif char in "'\"":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def normalise_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def match_names(suggestion: dict[str, Any], names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Map suggested keys to parameter names (exact, then ignoring case and punctuation).

    Returns ``(matched {name: value}, unknown keys)``.
    """
    exact = set(names)
    loose = {normalise_key(name): name for name in names}
    matched: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in suggestion.items():
        name = key if key in exact else loose.get(normalise_key(str(key)))
        if name is None:
            unknown.append(str(key))
        else:
            matched[name] = value
    return matched, unknown
