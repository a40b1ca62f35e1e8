"""DSPy metrics as OPTO feedback.

DSPy metrics come in three shapes: ``metric(gold, pred)``, ``metric(gold, pred, trace=None)``
(``dspy.Evaluate``, BootstrapFewShot) and GEPA's ``metric(gold, pred, trace, pred_name,
pred_trace)``; they return a bool, a number, or ``dspy.Prediction(score=..., feedback=...)``.
`adapt_metric` calls each with the arguments it needs (``trace`` and the rest as None, the
scoring mode) and turns the result into a `Feedback` whose text reaches OptoPrime's prompt.
When a metric gives only a score, the feedback text shows the expected labels next to what the
program produced (``label_feedback=True``), as in the Trace paper's DSPy experiments.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable

import dspy

from opto_core.kernel.feedback import Feedback
from opto_core.kernel.graph import shorten


class MetricError(ValueError):
    """The metric raised, or returned something that is not a score."""


def metric_arity(metric: Callable[..., Any]) -> int:
    """How many positional arguments to pass: the metric's required ones, at least 2 (at most 5)."""
    if not callable(metric):
        raise TypeError(f"the metric must be callable, got {type(metric).__name__}")
    try:
        signature = inspect.signature(metric)
    except (TypeError, ValueError):
        return 2
    positional = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    required = sum(p.default is p.empty for p in positional)
    if len(positional) < 2 and not variadic:
        raise TypeError(
            f"the metric {_name(metric)} must accept (example, prediction[, trace]); its signature is {signature}"
        )
    if required > 5:
        raise TypeError(
            f"the metric {_name(metric)} requires {required} arguments; DSPy metrics take at most 5 "
            "(gold, pred, trace, pred_name, pred_trace)"
        )
    return max(2, required)


def _name(metric: Callable[..., Any]) -> str:
    return getattr(metric, "__name__", type(metric).__name__)


def _score(value: Any, metric: Callable[..., Any], example: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise MetricError(
                f"the metric {_name(metric)} returned {number} for the example {shorten(repr(example), 160)}; "
                "a score must be a finite number"
            )
        return number
    raise MetricError(
        f"the metric {_name(metric)} returned {type(value).__name__} {shorten(repr(value), 80)} for the "
        f"example {shorten(repr(example), 160)}; expected a bool, a number, or dspy.Prediction(score=..., "
        "feedback=...)"
    )


def _label_text(example: Any, prediction: Any) -> str:
    """'Expected answer='4'; the program gave answer='5'.' for the labels the prediction also has."""
    try:  # the labels are what with_inputs(...) left out; without it, DSPy raises ValueError
        labels = dict(example.labels().items()) if isinstance(example, dspy.Example) else {}
    except ValueError:
        labels = {}
    if not labels:
        return ""
    produced = dict(prediction.items()) if isinstance(prediction, dspy.Example) else {}
    shared = [k for k in labels if k in produced] or list(labels)
    expected = ", ".join(f"{k}={shorten(str(labels[k]), 300)!r}" for k in shared)
    got = ", ".join(f"{k}={shorten(str(produced[k]), 300)!r}" for k in shared if k in produced)
    return f"Expected {expected}" + (f"; the program gave {got}." if got else ".")


def to_feedback(
    result: Any, example: Any, prediction: Any, metric: Callable[..., Any], label_feedback: bool = True
) -> Feedback:
    """A metric's return value as `Feedback` (score and text)."""
    text = ""
    if isinstance(result, (bool, numbers.Real)):
        score = _score(result, metric, example)
    elif isinstance(result, (dspy.Example, dict)) and "score" in result:  # dspy.Prediction(score, feedback)
        score = _score(result["score"], metric, example)
        text = str(result.get("feedback") or "")
    elif hasattr(result, "score") and not callable(result.score):
        score = _score(result.score, metric, example)
        text = str(getattr(result, "feedback", "") or "")
    else:
        _score(result, metric, example)  # raises the clear error
        raise AssertionError("unreachable")
    if not text and label_feedback:
        text = _label_text(example, prediction)
    return Feedback(score=score, text=text)


def adapt_metric(metric: Callable[..., Any], *, label_feedback: bool = True) -> Callable[[Any, Any], Feedback]:
    """``feedback_fn(example, prediction) -> Feedback`` for `opto_core.engine.loop.optimize`."""
    arity = metric_arity(metric)

    def feedback_fn(example: Any, prediction: Any) -> Feedback:
        try:
            result = metric(example, prediction, *([None] * (arity - 2)))
        except Exception as exc:
            raise MetricError(
                f"the metric {_name(metric)} raised {type(exc).__name__}: {exc} on the example "
                f"{shorten(repr(example), 160)}"
            ) from exc
        return to_feedback(result, example, prediction, metric, label_feedback)

    feedback_fn.__name__ = f"feedback_from_{_name(metric)}"
    return feedback_fn
