"""Every validation rule, with a value that passes and one that fails."""

import pytest

from opto_core import InvalidValue, Parameter

CODE = 'def score(text: str, bonus: int = 1) -> int:\n    """Count words."""\n    return len(text.split()) + bonus\n'


def reject(parameter: Parameter, value, reason: str):
    with pytest.raises(InvalidValue) as info:
        parameter.validate(value)
    assert info.value.parameter == parameter.name
    assert reason in info.value.reason, info.value.reason
    assert parameter.name in str(info.value)


def test_text():
    p = Parameter("chain.prompt", "text", "Be brief.")
    assert p.validate("Be precise.") == "Be precise."
    reject(p, 42, "expected text")


def test_float_bounds_and_lossless_conversion():
    p = Parameter("llm.temperature", "float", 0.7, lower=0.0, upper=2.0)
    assert p.validate(1) == 1.0 and p.validate("0.25") == 0.25
    reject(p, 2.5, "above the upper bound 2.0")
    reject(p, -0.1, "below the lower bound 0.0")
    reject(p, "hot", "expected a float")
    reject(p, True, "expected a float")
    reject(p, float("nan"), "finite")


def test_int_never_truncates():
    p = Parameter("llm.max_tokens", "int", 256, lower=1, upper=4096)
    assert p.validate(512) == 512 and p.validate(10.0) == 10 and p.validate("64") == 64
    reject(p, 10.5, "not a whole number")
    reject(p, "10.5", "not a whole number")
    reject(p, 0, "below the lower bound 1")


def test_choice():
    p = Parameter("retriever.k", "choice", 3, choices=[1, 3, 5])
    assert p.validate(5) == 5 and p.validate("5") == 5
    reject(p, 4, "not one of the choices")
    with pytest.raises(ValueError, match="needs its choices"):
        Parameter("c", "choice", 1)


def test_json_keeps_its_type():
    p = Parameter("demos", "json", [{"q": "a", "a": "b"}])
    assert p.validate('[{"q": "x", "a": "y"}]') == [{"q": "x", "a": "y"}]
    assert p.validate("[3, 4]") == [3, 4]  # a string is parsed, never split into characters
    reject(p, {"q": 1}, "expected a JSON array")
    reject(p, "[1, 2", "does not parse")


def test_code_accepts_a_new_body_with_imports_and_docstring():
    p = Parameter("tools.score.code", "code", CODE)
    new = 'import re\n"""module doc"""\n\ndef score(text: str, bonus: int = 1) -> int:\n    return len(re.findall(r"\\w+", text)) + bonus\n'
    assert p.validate(new) == new


@pytest.mark.parametrize(
    "source, reason",
    [
        ("def score(text: str, bonus: int = 1) -> int\n    return 1\n", "does not parse"),
        ("def count(text: str, bonus: int = 1) -> int:\n    return 1\n", "keep its name 'score'"),
        ("def score(text: str) -> int:\n    return 1\n", "signature must stay"),
        ("def score(text: str, bonus: int = 2) -> int:\n    return 1\n", "signature must stay"),
        (
            "x = 1\ndef score(text: str, bonus: int = 1) -> int:\n    return x\n",
            "only imports, a docstring and one function",
        ),
        (
            "def score(text: str, bonus: int = 1) -> int:\n    return 1\ndef other():\n    pass\n",
            "exactly one function",
        ),
        ("async def score(text: str, bonus: int = 1) -> int:\n    return 1\n", "signature must stay"),
        (7, "expected Python source"),
    ],
)
def test_code_rejections(source, reason):
    reject(Parameter("tools.score.code", "code", CODE), source, reason)


def test_adapter_checks_run_after_conversion():
    def keeps_variable(value: str) -> str:
        if "{question}" not in value:
            raise ValueError("the template must keep {question}")
        return value

    p = Parameter("prompt", "text", "Q: {question}", checks=[keeps_variable])
    assert p.validate("Question: {question}") == "Question: {question}"
    reject(p, "Question:", "must keep {question}")


def test_spec_describes_constraints():
    spec = Parameter("t", "float", 0.5, lower=0, upper=1, description="sampling temperature").spec()
    assert spec["kind"] == "float" and spec["lower"] == 0 and spec["upper"] == 1
    assert "float in [0, 1]" in spec["constraint"] and "sampling temperature" in spec["constraint"]
    with pytest.raises(ValueError, match="unknown kind"):
        Parameter("x", "vector", [1])
