"""Feedback: what the trace oracle says about an output, as a score, a sentence, or both.

OPTO's point is that feedback can be richer than a number: an error message or a
sentence such as "the total is 3 too high" tells the optimizer *how* to change things.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Feedback:
    """A score (higher is better) and/or a text for one output."""

    score: float | None = None
    text: str = ""

    @classmethod
    def coerce(cls, value: Any) -> Feedback:
        """Accept what users naturally return: a number, a bool, a string, ``(score, text)``,
        a mapping with ``score`` and ``feedback``/``text``, an object with those attributes
        (``dspy.Prediction``), or a `Feedback`."""
        if isinstance(value, Feedback):
            return value
        if isinstance(value, bool):
            return cls(score=1.0 if value else 0.0)
        if isinstance(value, (int, float)):
            return cls(score=float(value))
        if isinstance(value, str):
            return cls(text=value)
        if isinstance(value, tuple) and len(value) == 2:
            score, text = value
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                raise TypeError(f"feedback (score, text): the score must be a number, got {score!r}")
            return cls(score=None if score is None else float(score), text=str(text or ""))
        if isinstance(value, dict) and ("score" in value or "feedback" in value or "text" in value):
            return cls.coerce((value.get("score"), value.get("feedback", value.get("text", ""))))
        if hasattr(value, "score") and not callable(value.score):
            text = getattr(value, "feedback", None) or getattr(value, "text", None) or ""
            return cls.coerce((value.score, text))
        raise TypeError(
            f"feedback must be a number, a string, a (score, text) pair or a Feedback, got {type(value).__name__}"
        )

    def render(self) -> str:
        """One line for the optimizer's prompt."""
        parts = []
        if self.score is not None:
            parts.append(f"score: {self.score:g}")
        if self.text:
            parts.append(self.text)
        return " | ".join(parts) if parts else "(no feedback)"

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "text": self.text}
