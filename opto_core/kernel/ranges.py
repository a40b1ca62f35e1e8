"""Ranges that make sense for the numbers users tune: one rule per kind of setting.

A search over numbers is only as good as its bounds: searched in [1, 32768], a chat model's
``max_tokens`` was set to 31,688 (above most models' output limit) and a demo's to 17 (too short
for any answer). Adapters that turn a setting into a `Parameter` ask here for its bounds, so every
framework gets the same rules; each rule is also written in ``docs/optimizing.md``:

- `max_tokens_range`: within the model's known output limit (`OUTPUT_LIMITS`), at most
  `MAX_TOKENS_FACTOR` times the current value but always up to `MAX_TOKENS_FLOOR` (a value so small
  that it cuts every answer off must be able to grow to what answers need); never below what the
  current answers need (the largest observed completion, plus a quarter), else a quarter of the
  current value but at least `MIN_ANSWER_TOKENS`. An unknown model: the same without the limit.
- `temperature_range`: [0, 2] (OpenAI-compatible APIs); [0, 1] for Anthropic's Claude models.
- `top_p_range`: (0, 1], searched from `TOP_P_MIN`.
- `count_range`: ``k``-like counts (documents to retrieve, candidates to fetch): from 1 to
  `COUNT_FACTOR` times the current value (at least current + 4), capped at ``cap``.
- `fraction_range`: thresholds on a normalized score (``score_threshold``): [0, 1].

`range_for(setting, current, ...)` picks the rule by the setting's usual name. Every rule keeps
the current value inside its range (a parameter must start valid), and says in ``Range.why`` how
the bounds were chosen, for the parameter's description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

__all__ = [
    "MAX_TOKENS_FLOOR",
    "OUTPUT_LIMITS",
    "Range",
    "count_range",
    "fraction_range",
    "max_tokens_range",
    "output_limit",
    "range_for",
    "temperature_range",
    "top_p_range",
]

#: The most tokens a model may answer with (its output limit), by model family, as its provider
#: documents it (late 2025). A dated snapshot or a provider prefix (``gpt-4o-2024-08-06``,
#: ``openai/gpt-4o``) uses its family's limit; the longest matching family name wins.
OUTPUT_LIMITS: dict[str, int] = {
    "gpt-3.5-turbo": 4_096,
    "gpt-4": 8_192,
    "gpt-4-turbo": 4_096,
    "gpt-4o": 16_384,
    "gpt-4o-mini": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.1-mini": 32_768,
    "gpt-4.1-nano": 32_768,
    "o1": 100_000,
    "o1-mini": 65_536,
    "o3": 100_000,
    "o3-mini": 100_000,
    "o4-mini": 100_000,
    "gpt-5": 128_000,
    "gpt-5-mini": 128_000,
    "gpt-5-nano": 128_000,
    "claude-3-haiku": 4_096,
    "claude-3-opus": 4_096,
    "claude-3-5-haiku": 8_192,
    "claude-3-5-sonnet": 8_192,
    "claude-3-7-sonnet": 64_000,
    "claude-sonnet-4": 64_000,
    "claude-opus-4": 32_000,
    "gemini-1.5-pro": 8_192,
    "gemini-1.5-flash": 8_192,
    "gemini-2.0-flash": 8_192,
    "gemini-2.5-pro": 65_536,
    "gemini-2.5-flash": 65_536,
    "SmolLM2-135M-Instruct": 4_096,  # the embedded model: its context window as served here
}
#: ``max_tokens`` is searched up to this many times its current value.
MAX_TOKENS_FACTOR = 4
#: ``max_tokens`` is always searched up to at least this (within the model's limit), whatever its current value.
MAX_TOKENS_FLOOR = 1_024
#: Without observed answers, ``max_tokens`` is never searched below this (a sentence and a bit).
MIN_ANSWER_TOKENS = 64
#: Without a current value nor a known model, ``max_tokens`` is searched up to this.
DEFAULT_MAX_TOKENS = 4_096
#: The smallest ``top_p`` searched (0 itself is not a valid nucleus).
TOP_P_MIN = 0.01
#: ``k``-like counts are searched up to this many times their current value.
COUNT_FACTOR = 4


@dataclass(frozen=True)
class Range:
    """Inclusive bounds for a numeric setting, and the rule that chose them (one sentence)."""

    lower: float
    upper: float
    why: str

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.lower <= value <= self.upper


def output_limit(model: str | None) -> int | None:
    """The model's output limit from `OUTPUT_LIMITS` (its family's), or ``None`` when unknown."""
    if not model:
        return None
    name = model.rsplit("/", 1)[-1].lower()
    best: tuple[int, int] | None = None
    for family, limit in OUTPUT_LIMITS.items():
        family_name = family.lower()
        if (name == family_name or name.startswith(family_name + "-")) and (best is None or len(family) > best[0]):
            best = (len(family), limit)
    return best[1] if best else None


def max_tokens_range(current: int | None, model: str | None = None, observed: Iterable[int] = ()) -> Range:
    """Bounds for ``max_tokens`` (``max_completion_tokens``, ``num_predict``...).

    ``observed``: completion token counts of the current answers, when known (the loop's runs record
    them); the lower bound keeps room for the longest of them.
    """
    limit = output_limit(model)
    counts = [int(c) for c in observed if isinstance(c, (int, float)) and c > 0]
    if current is not None and current <= 0:
        current = None
    if counts:
        lower = math.ceil(max(counts) * 1.25)
        low_why = f"the longest current answer ({max(counts)} tokens) plus a quarter"
    else:
        lower = max(MIN_ANSWER_TOKENS, (current or 0) // 4)
        low_why = (
            f"a quarter of the current {current}"
            if current and current // 4 > MIN_ANSWER_TOKENS
            else f"{MIN_ANSWER_TOKENS} tokens, room for a short answer"
        )
    if current is not None:
        upper = max(current * MAX_TOKENS_FACTOR, MAX_TOKENS_FLOOR)
        up_why = (
            f"{MAX_TOKENS_FACTOR} times the current {current}"
            if current * MAX_TOKENS_FACTOR >= MAX_TOKENS_FLOOR
            else f"{MAX_TOKENS_FLOOR} (room to grow from the current {current})"
        )
        if limit is not None and limit < upper:
            upper, up_why = limit, f"{model}'s output limit ({limit})"
    elif limit is not None:
        upper, up_why = limit, f"{model}'s output limit ({limit})"
    else:
        upper, up_why = DEFAULT_MAX_TOKENS, f"{DEFAULT_MAX_TOKENS} (no current value, unknown model)"
    if limit is not None:
        lower = min(lower, limit)
    if current is not None:  # the current value always stays valid
        lower, upper = min(lower, current), max(upper, current)
    lower = min(lower, upper)
    return Range(int(lower), int(upper), f"max_tokens from {low_why} up to {up_why}")


def temperature_range(current: float | None = None, model: str | None = None) -> Range:
    """[0, 2] for OpenAI-compatible APIs, [0, 1] for Claude models (their API's range)."""
    claude = bool(model) and "claude" in str(model).lower()
    upper = 1.0 if claude else 2.0
    if current is not None and current > upper:
        upper = float(current)
    return Range(
        0.0,
        upper,
        "temperature in [0, 1], the range of Anthropic's API"
        if claude
        else "temperature in [0, 2], the range OpenAI-compatible APIs accept",
    )


def top_p_range(current: float | None = None) -> Range:
    """(0, 1], searched from `TOP_P_MIN`."""
    lower = TOP_P_MIN if current is None or current >= TOP_P_MIN else float(current)
    return Range(lower, 1.0, f"top_p in ({lower:g}, 1]: a probability mass, 0 excluded")


def count_range(current: int, *, cap: int = 100) -> Range:
    """Bounds for a ``k``-like count: 1 to `COUNT_FACTOR` times the current value (at least current + 4), at most ``cap``."""
    if isinstance(current, bool) or not isinstance(current, int) or current < 1:
        raise ValueError(f"a count must be a positive int, got {current!r}")
    upper = min(max(current * COUNT_FACTOR, current + 4), max(cap, current))
    return Range(1, upper, f"a count from 1 to {upper} ({COUNT_FACTOR} times the current {current}, at most {cap})")


def fraction_range(current: float | None = None) -> Range:
    """[0, 1]: thresholds on normalized relevance scores (``score_threshold``, ``lambda_mult``)."""
    return Range(0.0, 1.0, "a normalized score in [0, 1]")


#: Setting names (as frameworks spell them) -> the rule that bounds them.
_NAMES = {
    **dict.fromkeys(
        ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens", "num_predict", "maxTokens"),
        "max_tokens",
    ),
    "temperature": "temperature",
    "top_p": "top_p",
    **dict.fromkeys(("k", "fetch_k", "top_k", "n_results", "num_results", "max_results"), "count"),
    **dict.fromkeys(("score_threshold", "lambda_mult", "similarity_threshold"), "fraction"),
}


def range_for(
    setting: str, current: float | int | None, *, model: str | None = None, observed: Iterable[int] = ()
) -> Range | None:
    """The range for a setting by its usual name (the last part of a dotted name), or ``None`` when no rule applies."""
    rule = _NAMES.get(setting.rsplit(".", 1)[-1])
    if rule == "max_tokens":
        return max_tokens_range(int(current) if current is not None else None, model, observed)
    if rule == "temperature":
        return temperature_range(current, model)
    if rule == "top_p":
        return top_p_range(current)
    if rule == "count" and isinstance(current, int) and not isinstance(current, bool) and current >= 1:
        return count_range(current)
    if rule == "fraction":
        return fraction_range(current)
    return None
