"""What a worker in another process builds the workflow from (Ray, the sandbox, spawned workers).

cloudpickle sends a module's functions by reference and its objects by value. A workflow that lives
in a module reads the module's own parameters when it runs in the worker, so the parameters the
target holds must be those very objects there, or no value the loop applies would ever reach a run.
"""

from __future__ import annotations

import json

import cloudpickle
import workflow_in_a_module as module

from opto_core import Parameter, optimize
from opto_core.engine.executors.payload import dumps_target
from opto_core.engine.target import FunctionTarget
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM


def target():
    return FunctionTarget(module.run, [module.answer, module.PROMPT], input_keys=["question"])


def test_module_level_parameters_and_ops_travel_by_reference():
    loaded = cloudpickle.loads(dumps_target(target()))
    assert [p is q for p, q in zip(loaded.parameters(), [module.answer.code, module.PROMPT])] == [True, True]
    assert loaded.fn is module.run


def test_objects_of_a_script_or_a_by_value_module_still_travel_by_value():
    local = Parameter("local", "text", "x")
    loaded = cloudpickle.loads(dumps_target(FunctionTarget(lambda: local.value, [local])))
    assert loaded.parameters()[0] is not local and loaded.parameters()[0].value == "x"
    cloudpickle.register_pickle_by_value(module)
    try:
        loaded = cloudpickle.loads(dumps_target(target()))
        assert loaded.parameters()[1] is not module.PROMPT
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def test_values_reach_a_workflow_that_lives_in_a_module_in_the_sandbox():
    seen = []

    def feedback(example, output):
        seen.append(output)
        return 1.0 if output.startswith("Be brief:") else 0.0

    llm = ScriptedLLM([json.dumps({"reasoning": "r", "suggestion": {"prompt": "Be brief:"}})], repeat_last=True)
    try:
        result = optimize(
            target(),
            [{"question": "q"}],
            feedback,
            OptoPrime(target().parameters(), llm),
            max_steps=1,
            isolation="sandbox",
        )
    finally:
        module.PROMPT.value = "Answer:"
    assert seen[0] == "Answer: q" and seen[-1] == "Be brief: q", seen  # the proposal ran in the box
    assert result.history[1]["kept"] is True and result.best_values["prompt"] == "Be brief:"


def test_compiling_in_a_process_whose_runs_are_isolated_imports_no_module_that_is_not_loaded():
    import pytest

    from opto_core.kernel.code import CodeShapeError, compile_like, runs_elsewhere

    def original(text: str) -> str:
        return text

    head = "def original(text: str) -> str:\n    return text\n"
    runs_elsewhere(True)
    try:
        with pytest.raises(CodeShapeError, match="imports 'unittest.__main__' at module level"):
            compile_like("import unittest.__main__\n" + head, original)
        with pytest.raises(CodeShapeError, match="import it inside the function body"):
            compile_like("from logging import handlers_that_do_not_exist\n" + head, original)
        assert compile_like("import json\nimport difflib\n" + head, original)("a") == "a"  # loaded, or safe
    finally:
        runs_elsewhere(False)
    assert not runs_elsewhere()
