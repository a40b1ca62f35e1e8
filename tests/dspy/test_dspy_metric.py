"""DSPy metric shapes (2, 3 or 5 arguments; bool, float or Prediction) as OPTO feedback."""

from __future__ import annotations

import dspy
import pytest

from opto_adapters.dspy import MetricError, adapt_metric
from opto_adapters.dspy.metric import metric_arity

GOLD = dspy.Example(question="2+2?", answer="4").with_inputs("question")
RIGHT, WRONG = dspy.Prediction(answer="4"), dspy.Prediction(answer="5")


def test_each_metric_shape_gets_the_arguments_it_needs():
    calls = []

    def two(gold, pred):
        calls.append(("two",))
        return gold.answer == pred.answer

    def three(gold, pred, trace):
        calls.append(("three", trace))
        return 1.0

    def gepa(gold, pred, trace, pred_name, pred_trace):
        calls.append(("gepa", trace, pred_name, pred_trace))
        return dspy.Prediction(score=0.5, feedback="half right")

    def optional(gold, pred, trace=None, pred_name=None, pred_trace=None):
        calls.append(("optional",))
        return 0.25

    assert [metric_arity(m) for m in (two, three, gepa, optional)] == [2, 3, 5, 2]
    assert adapt_metric(two)(GOLD, RIGHT).score == 1.0
    assert adapt_metric(three)(GOLD, RIGHT).score == 1.0
    feedback = adapt_metric(gepa)(GOLD, RIGHT)
    assert (feedback.score, feedback.text) == (0.5, "half right")
    assert adapt_metric(optional)(GOLD, RIGHT).score == 0.25
    assert calls == [("two",), ("three", None), ("gepa", None, None, None), ("optional",)]


def test_a_score_only_metric_gets_the_labels_as_text():
    feedback = adapt_metric(lambda g, p, t=None: g.answer == p.answer)(GOLD, WRONG)
    assert feedback.score == 0.0
    assert feedback.text == "Expected answer='4'; the program gave answer='5'."
    quiet = adapt_metric(lambda g, p: 0.0, label_feedback=False)(GOLD, WRONG)
    assert quiet.text == ""


def test_a_metric_that_raises_names_the_example():
    def broken(gold, pred, trace=None):
        return float(pred.missing)

    with pytest.raises(MetricError, match=r"raised AttributeError.*2\+2\?"):
        adapt_metric(broken)(GOLD, RIGHT)


@pytest.mark.parametrize("value", ["yes", None, [1.0], float("nan"), dspy.Prediction(score="high")])
def test_a_metric_that_returns_no_number_is_a_clear_error(value):
    with pytest.raises(MetricError, match="2\\+2\\?"):
        adapt_metric(lambda g, p: value)(GOLD, RIGHT)


def test_metrics_with_impossible_signatures_are_refused():
    with pytest.raises(TypeError, match="must accept"):
        adapt_metric(lambda pred: 1.0)
    with pytest.raises(TypeError, match="at most 5"):
        adapt_metric(lambda a, b, c, d, e, f: 1.0)
    with pytest.raises(TypeError, match="callable"):
        adapt_metric("exact_match")
