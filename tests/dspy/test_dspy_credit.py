"""Credit that never goes missing in DSPy programs: examples must say their inputs; typed outputs stay credited."""

from __future__ import annotations

import dspy
import pytest

from opto_adapters.dspy import OptoTeleprompter, ProgramTarget
from opto_adapters.dspy.target import ExampleError
from opto_core.testing import ScriptedLLM


def test_examples_without_with_inputs_are_refused_by_the_target_and_the_teleprompter(two_same, echo_lm):
    bare = dspy.Example(question="What is 2+2?", answer="4")
    target = ProgramTarget(two_same, lm=echo_lm)
    with pytest.raises(ExampleError, match=r"\.with_inputs\('question'\)"):
        target.inputs_of(bare)
    assert target.inputs_of(bare.with_inputs("question")) == {"question": "What is 2+2?"}
    assert ProgramTarget(two_same, lm=echo_lm, input_keys=["question"]).inputs_of(bare) == {"question": "What is 2+2?"}
    assert target.inputs_of({"question": "q", "answer": "a"}) == {"question": "q"}  # a dict: the program's inputs
    llm = ScriptedLLM(['{"reasoning": "-", "suggestion": {}}'], repeat_last=True)
    teleprompter = OptoTeleprompter(metric=lambda g, p, t=None: 1.0, llm=llm, max_steps=1, batch_size=1)
    with dspy.context(lm=echo_lm):
        with pytest.raises(ExampleError, match=r"trainset\[1\]: the example does not say which fields are inputs"):
            teleprompter.compile(two_same, trainset=[bare.with_inputs("question"), bare])
    assert llm.requests == []  # refused before any optimizer call


def test_apply_values_takes_your_own_parameters(two_same, tmp_path):
    from opto_adapters.dspy import apply_values
    from opto_core import Parameter
    from opto_core.kernel.binding import UnknownParameters
    from opto_core.kernel.values import save_values

    path = tmp_path / "values.json"
    save_values(path, {"first.instructions": "Answer briefly.", "style.suffix": "Be kind."}, {"framework": "dspy"})
    with pytest.raises(UnknownParameters, match=r"parameters=\[\.\.\.\]"):
        apply_values(two_same, path)
    assert two_same.first.signature.instructions != "Answer briefly."  # nothing was written
    mine = Parameter("style.suffix", "text", "Be brief.")
    applied = apply_values(two_same, path, parameters=[mine])
    assert applied == {"first.instructions": "Answer briefly.", "style.suffix": "Be kind."}
    assert mine.value == "Be kind." and two_same.first.signature.instructions == "Answer briefly."
