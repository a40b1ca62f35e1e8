"""The code policy on LLM-written code: each attack is rejected before anything runs, under plain
Python and through every adapter's code parameters; a marker file proves nothing ran."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from opto_core import InvalidValue, Parameter
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.code import parse_function
from opto_core.kernel.code_policy import CodePolicy, apply_policy
from opto_core.kernel.trace import capture, op

RATE = Parameter("rate", "float", 0.5, lower=0.0, upper=0.9)


def attacks(original: str, marker: str) -> dict[str, str]:
    """Suggested versions of ``original`` (same name and signature) that would create ``marker``."""
    shape = parse_function(original)
    head = f"{'async def' if shape.is_async else 'def'} {shape.name}{shape.signature}:\n"
    ret = "    return None\n"
    m = repr(marker)
    return {
        "decorator payload": f"@(lambda f: (__import__('os').system('echo pwned > ' + {m}), f)[1])\n" + head + ret,
        "module-level import this": "import this\n" + head + ret,
        "module-level import os": "import os\n" + head + f"    os.system('echo pwned > ' + {m})\n" + ret,
        "os in the body": head + f"    import os\n    os.system('echo pwned > ' + {m})\n" + ret,
        "subprocess": head + f"    import subprocess\n    subprocess.run(['touch', {m}])\n" + ret,
        "socket": head + f"    import socket\n    socket.socket().close()\n    print({m})\n" + ret,
        "urllib": head + "    from urllib.request import urlopen\n    urlopen('http://127.0.0.1:9/?d=secret')\n" + ret,
        "open": head + f"    open({m}, 'w').write('pwned')\n" + ret,
        "another parameter": head + "    RATE.value = 99.0\n" + ret,
        "dunder escape": head + "    ().__class__.__mro__[1].__subclasses__()\n" + ret,
        "globals escape": head + f"    g = {shape.name}.__globals__\n    g['__builtins__']['open']({m}, 'w')\n" + ret,
        "computed getattr": head + f"    getattr({shape.name}, '__glo' + 'bals__')\n" + ret,
        "format string escape": head + f"    '{{0.__globals__}}'.format({shape.name})\n" + ret,
        "eval": head + f"    eval(\"__import__('os').system('touch ' + {m})\")\n" + ret,
    }


ATTACKS = list(attacks("def f(x: int) -> int:\n    return x\n", "/m"))


# ----- the policy itself -------------------------------------------------------------------------------
@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_is_rejected_with_a_reason(attack, tmp_path):
    original = "def f(x: int) -> int:\n    return x\n"
    parameter = Parameter("f.code", "code", original)
    with pytest.raises(InvalidValue) as info:
        parameter.validate(attacks(original, str(tmp_path / "m"))[attack])
    assert info.value.parameter == "f.code" and len(info.value.reason) > 20


def test_an_original_that_uses_os_may_keep_using_what_it_used():
    original = "import os\n\ndef f(p: str) -> str:\n    return os.path.basename(p)\n"
    parameter = Parameter("f.code", "code", original)
    new = "import os\n\ndef f(p: str) -> str:\n    return os.path.basename(p.strip()).upper()\n"
    assert parameter.validate(new) == new
    # ... but not another path into a module outside the safe set, nor another module
    with pytest.raises(InvalidValue, match="os.path.dirname"):
        parameter.validate("import os\n\ndef f(p: str) -> str:\n    return os.path.dirname(p)\n")
    with pytest.raises(InvalidValue, match="subprocess"):
        parameter.validate("import os, subprocess\n\ndef f(p: str) -> str:\n    return os.path.basename(p)\n")
    # the user opens a module explicitly
    parameter.code_policy = CodePolicy(allow={"os.path"})
    assert parameter.validate("import os\n\ndef f(p: str) -> str:\n    return os.path.dirname(p)\n")


def test_permissive_keeps_only_the_shape_checks_and_objects_configure_it():
    original = "def f(x: int) -> int:\n    return x\n"
    parameter = Parameter("f.code", "code", original, code_policy="permissive")
    body = "def f(x: int) -> int:\n    import os\n    return x\n"
    assert parameter.validate(body) == body
    with pytest.raises(InvalidValue, match="decorators"):
        parameter.validate("@staticmethod\ndef f(x: int) -> int:\n    return x\n")
    assert apply_policy([parameter, RATE], "strict") == 1
    with pytest.raises(InvalidValue, match="imports 'os'"):
        parameter.validate(body)
    apply_policy([parameter], CodePolicy(allow={"os"}))
    assert parameter.validate(body) == body
    apply_policy([parameter], CodePolicy(deny={"math"}))
    with pytest.raises(InvalidValue, match="math"):
        parameter.validate("import math\ndef f(x: int) -> int:\n    return math.floor(x)\n")
    with pytest.raises(ValueError, match="code_policy"):
        apply_policy([parameter], "lenient")


def test_validation_never_runs_the_code(tmp_path):
    """Even code that passes the policy is only parsed by validate: no import, no decorator, no body."""
    marker = tmp_path / "m"
    parameter = Parameter("f.code", "code", "import json\ndef f(x: int) -> int:\n    return x\n")
    fine = f"import json\ndef f(x: int = print({str(marker)!r})) -> int:\n    return x\n"
    with pytest.raises(InvalidValue):  # a changed default is a changed signature
        parameter.validate(fine)
    assert not marker.exists()


# ----- plain Python: @op(trainable=True) -------------------------------------------------------------------
@op(trainable=True, parameter_name="double.code")
def double(x: int) -> int:
    return x * 2


def workflow(x: int) -> int:
    return double(x)


@pytest.mark.parametrize("attack", ATTACKS)
def test_plain_python_op_rejects_and_runs_nothing(attack, tmp_path, capsys):
    marker = tmp_path / "m"
    target = FunctionTarget(workflow, [double], input_keys=["x"])
    before = target.snapshot()
    with pytest.raises(InvalidValue):
        target.apply({"double.code": attacks(double.source, str(marker))[attack]})
    output, _ = target.run({"x": 3})
    assert output == 6 and not marker.exists()
    assert "Zen of Python" not in capsys.readouterr().out
    assert RATE.value == 0.5
    target.restore(before)


def test_plain_python_op_revalidates_a_value_written_around_validate(tmp_path):
    marker = tmp_path / "m"
    try:
        double.code.value = attacks(double.source, str(marker))["os in the body"]  # bypasses validate
        with capture() as run:
            with pytest.raises(InvalidValue):
                double(2)
        assert not marker.exists() and run.graph.of_kind("exception")
    finally:
        double.code.value = double.source


def test_plain_python_accepted_code_runs_through_compile_like():
    target = FunctionTarget(workflow, [double], input_keys=["x"])
    try:
        target.apply({"double.code": "def double(x: int) -> int:\n    return x * 3\n"})
        assert target.run({"x": 3})[0] == 9
    finally:
        double.code.value = double.source


# ----- adapters: LangChain tool, AutoGen AgentChat tool, DSPy tool ----------------------------------------------
def _langchain_target():
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool

    from opto_adapters.langchain import ChainTarget

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    return ChainTarget(add), "tools.add.code", lambda: add.invoke({"a": 1, "b": 2}) == 3


def _autogen_target():
    pytest.importorskip("autogen_agentchat")
    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.replay import ReplayChatCompletionClient

    from opto_adapters.autogen import as_target

    def mul(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    info = {
        "function_calling": True,
        "vision": False,
        "json_output": False,
        "family": "unknown",
        "structured_output": False,
    }
    agent = AssistantAgent("calc", ReplayChatCompletionClient(["ok"], model_info=info), tools=[mul])
    return as_target(agent), "calc.tools.mul.code", lambda: True


def _dspy_target():
    dspy = pytest.importorskip("dspy")
    from opto_adapters.dspy import ProgramTarget

    def to_f(celsius: float) -> float:
        """Convert Celsius to Fahrenheit."""
        return celsius * 1.8 + 32

    return ProgramTarget(dspy.ReAct("question -> answer", tools=[to_f])), "tools.to_f.code", lambda: True


@pytest.mark.parametrize(
    "build", [_langchain_target, _autogen_target, _dspy_target], ids=["langchain", "autogen", "dspy"]
)
def test_adapter_code_parameters_reject_every_attack_before_anything_runs(build, tmp_path, capsys):
    target, name, still_works = build()
    code = {p.name: p for p in target.parameters()}[name]
    assert code.kind == "code"
    original = code.value
    marker = tmp_path / "m"
    for attack, source in attacks(original, str(marker)).items():
        with pytest.raises(InvalidValue):
            target.apply({name: source})
        assert not marker.exists(), attack
        assert {p.name: p for p in target.parameters()}[name].value == original, attack
    assert "Zen of Python" not in capsys.readouterr().out
    assert still_works()


def test_a_decorator_payload_never_runs_in_a_fresh_process(tmp_path):
    """The issue's exact payload, end to end in a clean interpreter: validate, then apply, then call."""
    marker = tmp_path / "pwned"
    script = f"""
from opto_core import InvalidValue
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op

@op(trainable=True, parameter_name="f.code")
def f(x: int) -> int:
    return x

target = FunctionTarget(lambda x: f(x), [f], input_keys=["x"])
payload = "@(lambda f: (__import__('os').system('echo pwned > {marker}'), f)[1])\\ndef f(x: int) -> int:\\n    return x\\n"
try:
    target.apply({{"f.code": payload}})
except InvalidValue as exc:
    print("rejected:", exc.reason)
print(target.run({{"x": 1}})[0])
"""
    path = tmp_path / "attack.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert done.returncode == 0, done.stderr
    assert "rejected: the decorators must stay" in done.stdout
    assert not marker.exists()
