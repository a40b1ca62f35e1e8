"""The smallest optimization there is, shared by the loop, optimizer-protocol and record tests: a
plain-Python workflow ``x * k`` whose best ``k`` is 3, a scripted optimizer that proposes a ``k``,
and an OptoPrime that remembers every score the loop reports."""

from __future__ import annotations

import json

from opto_core import Feedback, Parameter
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime


@op
def scale(x, k):
    """Multiply x by k."""
    return x * k


TRAIN = [{"x": float(i)} for i in range(1, 5)]


def feedback(example, output):
    want = 3 * example["x"]
    return Feedback(-abs(output - want), f"expected {want}, got {output}")


def say(k):
    """The optimizer's answer that proposes ``k``."""
    return json.dumps({"reasoning": f"try k={k}", "suggestion": {"k": k}})


def make(k=1.0, workflow=None, lower=-100, upper=100):
    """The target and its parameter ``k``."""
    param = Parameter("k", "float", k, lower=lower, upper=upper)
    return FunctionTarget(workflow or (lambda x: scale(x, param)), [param]), param


class Recording(OptoPrime):
    """OptoPrime that keeps every (values, score) the loop reports through `observe`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def observe(self, values, score):
        self.seen.append((dict(values), score))
