"""A result a person can read: start and best score on the same examples, the change, why it stopped."""

from __future__ import annotations

import json

from opto_core import Feedback, Parameter
from opto_core.app.report import write_report
from opto_core.engine.loop import optimize
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


@op
def scale(x, k):
    """Multiply x by k."""
    return x * k


TRAIN = [{"x": float(i)} for i in range(1, 7)]


def feedback(example, output):
    return Feedback(1.0 if output == 3 * example["x"] else 0.0, f"expected {3 * example['x']}, got {output}")


def run(replies, **settings):
    k = Parameter("k", "float", 1.0, lower=-100, upper=100)
    target = FunctionTarget(lambda x: scale(x, k), [k])
    return optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), ScriptedLLM(replies)), **settings)


def say(k):
    return json.dumps({"reasoning": f"k = {k}", "suggestion": {"k": k}})


def test_without_a_validation_set_the_best_values_are_rescored_on_the_whole_training_set(tmp_path):
    result = run([say(3.0)], max_steps=1, batch_size=2, run_dir=str(tmp_path / "run"))
    assert result.initial_score == 0.0 and result.best_score == 1.0
    assert result.best_score_on == "on the training set, re-scored at the end with the best values"
    assert result.evaluations == 6 + 2 + 2 + 6  # start, batch, check, and the re-score of all six
    assert result.summary().splitlines() == [
        "start score  0.000 on the training set (6 examples)",
        "best score   1.000 on the training set, re-scored at the end with the best values (+1.000)",
        "change       k 1.0 -> 3.0 (by step 1)",
        "stopped      after 1 of 1 step: reached the step limit (max_steps)",
    ]
    page = write_report(tmp_path / "run").read_text()
    assert "re-scored at the end with the best values (+1.000)" in page and "k 1.0 -&gt; 3.0" in page


def test_a_run_that_kept_nothing_says_the_start_values_stayed_the_best():
    result = run([say(2.0), say(2.0)], max_steps=2, batch_size=2, keep="improved")
    assert result.best_score == result.initial_score == 0.0
    assert "on the training set (the start values stayed the best)" in result.summary()
    assert "change       none: the start values stayed the best" in result.summary()


def test_a_run_stopped_on_the_budget_is_not_rescored_and_says_its_score_does_not_compare():
    result = run([say(3.0)], max_steps=1, batch_size=2, max_evaluations=10)
    assert result.best_score_on == "the last kept batch (not re-scored: max_evaluations leaves no room)"
    assert "(+" not in result.summary()  # a batch score is never compared with the full-set start score
