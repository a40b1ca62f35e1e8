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

from opto_core.kernel.bounds import MAX_JSON_DEPTH, brackets, text_depth

_FENCE = re.compile(r"```(?:json|JSON|python)?\s*\n?(.*?)```", re.DOTALL)


class ParseError(ValueError):
    """The answer holds no usable JSON object; the message says what was wrong."""


def is_terminate(text: str) -> bool:
    """True when the whole answer is TERMINATE (quotes, punctuation and a code fence allowed)."""
    return re.sub(r"[`'\".!\s]|json", "", text, flags=re.IGNORECASE).upper() == "TERMINATE"


#: JSON decoding errors of an answer: malformed text, numbers past Python's digit limit (ValueError),
#: nesting past the recursion limit.
_UNREADABLE = (ValueError, RecursionError, MemoryError)
#: Deepest nesting read from an answer at all (a value inside is then held to `MAX_JSON_DEPTH` with a
#: reason of its own); well below what the JSON decoder's recursion can take.
MAX_ANSWER_DEPTH = 2 * MAX_JSON_DEPTH


def parse_answer(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (fenced, surrounded by prose, or with single quotes).

    Any answer gives a dict or `ParseError` with a reason: JSON nested deeper than
    `opto_core.kernel.bounds.MAX_JSON_DEPTH`, or numbers too long to read, are reasons too.
    """
    stripped = text.strip()
    if not stripped:
        raise ParseError("the answer was empty")
    if text_depth(stripped, MAX_ANSWER_DEPTH + 1) > MAX_ANSWER_DEPTH:
        raise ParseError(
            f"the answer nests JSON deeper than {MAX_ANSWER_DEPTH} levels; answer with one flat JSON "
            'object {"reasoning": "...", "suggestion": {"<variable>": <new value>}}'
        )
    candidates = [m.group(1).strip() for m in _FENCE.finditer(stripped)] + [stripped]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            value = json.loads(candidate)
            if isinstance(value, dict):
                return value
        except _UNREADABLE:
            pass
        for start in [m.start() for m in re.finditer(r"\{", candidate)][:50]:
            try:
                value, _ = decoder.raw_decode(candidate, start)
                if isinstance(value, dict):
                    return value
            except _UNREADABLE:
                pass
            end = _matching_brace(candidate, start)
            if end is not None:
                try:
                    value = ast.literal_eval(candidate[start : end + 1])
                    if isinstance(value, dict):
                        return value
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    pass
    raise ParseError(
        "no JSON object found in the answer; answer with one JSON object "
        '{"reasoning": "...", "suggestion": {"<variable>": <new value>}}'
    )


def _matching_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one at ``start``, skipping quoted strings."""
    depth = 0
    for index, char in brackets(text, start):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def normalise_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def match_names(suggestion: dict[str, Any], names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Map suggested keys to parameter names: exact names first, then names equal up to case and
    punctuation, but only when that loose match is unambiguous.

    Returns ``(matched {name: value}, refused keys)``. A key is refused when it names no parameter,
    when it loosely matches several (``"a.b"`` and ``"a_b"`` both normalise to ``"ab"``), or when its
    parameter already got a value from an exact or earlier key: one value per parameter, chosen by
    name, never by guess. `refusal` says why for each refused key.
    """
    exact = set(names)
    loose: dict[str, list[str]] = {}
    for name in names:
        loose.setdefault(normalise_key(name), []).append(name)
    matched: dict[str, Any] = {}
    refused: list[str] = []
    for key, value in suggestion.items():
        if key in exact:
            matched[key] = value
    for key, value in suggestion.items():
        if key in exact:
            continue
        candidates = loose.get(normalise_key(str(key)), [])
        if len(candidates) != 1 or candidates[0] in matched:
            refused.append(str(key))
        else:
            matched[candidates[0]] = value
    return matched, refused


def refusal(key: str, suggestion: dict[str, Any], names: list[str]) -> str:
    """Why `match_names` refused ``key`` (for the optimizer's retry)."""
    candidates = [name for name in names if normalise_key(name) == normalise_key(key)]
    if len(candidates) > 1:
        return f"matches several variables ({', '.join(candidates)}); use the exact name"
    if candidates:
        return f"is another spelling of {candidates[0]!r}, which already has a value; give one value per variable"
    return "is not a variable you may change"
