"""opto-values/1: saving optimized values and writing them into a freshly built workflow."""

import json

import pytest

from opto_core import InvalidValue, Parameter
from opto_core.kernel.binding import BoundParameters, UnknownParameters
from opto_core.kernel.values import ValuesFileError, apply_saved, load_values, resolve, save_values


def test_round_trip_with_meta_and_no_secret(tmp_path):
    path = save_values(
        tmp_path / "v.json", {"p": "hello", "t": 0.2}, {"framework": "python", "score": 0.9, "api_key": "fake-test-key"}
    )
    doc = json.loads(path.read_text())
    assert doc["format"] == "opto-values/1" and doc["values"] == {"p": "hello", "t": 0.2}
    assert doc["meta"]["api_key"] == "<redacted>" and "saved" in doc["meta"]
    loaded = load_values(path)
    assert loaded == {"p": "hello", "t": 0.2} and loaded.meta["score"] == 0.9


def test_refuses_to_overwrite_a_file_that_is_not_ours(tmp_path):
    other = tmp_path / "notes.json"
    other.write_text('{"mine": true}')
    with pytest.raises(ValuesFileError, match="not an opto-values file"):
        save_values(other, {"p": 1})
    assert json.loads(other.read_text()) == {"mine": True}


def test_other_formats_and_frameworks_are_refused(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"format": "opto-values/9", "values": {}}))
    with pytest.raises(ValuesFileError, match="opto-values/9"):
        load_values(tmp_path / "old.json")
    path = save_values(tmp_path / "lc.json", {"p": 1}, {"framework": "langchain"})
    with pytest.raises(ValuesFileError, match="langchain.*dspy"):
        resolve(path, framework="dspy")
    assert resolve(path, framework="langchain-core") == {"p": 1}  # the name files carried before


def test_apply_saved_checks_every_name_before_writing(tmp_path):
    p, q = Parameter("p", "text", "a"), Parameter("q", "float", 0.1, lower=0, upper=1)
    bound = BoundParameters([p, q])
    with pytest.raises(UnknownParameters, match=r"\['zzz'\].*\['p', 'q'\]"):
        apply_saved(bound, {"p": "b", "zzz": 1})
    assert p.value == "a"
    path = save_values(tmp_path / "v.json", {"p": "b", "q": 0.5})
    assert apply_saved(bound, path) == {"p": "b", "q": 0.5}
    assert (p.value, q.value) == ("b", 0.5)


def test_your_own_parameters_deploy_with_parameters_and_the_error_says_how(tmp_path):
    """A user's Parameter (a prompt the code formats, with used_by) is not discovered from the object."""
    discovered = Parameter("llm.temperature", "float", 0.7, lower=0, upper=2)
    instructions = Parameter(
        "agent.instructions", "text", "You help {company} customers.", template=True, meta={"used_by": "agent"}
    )
    path = save_values(
        tmp_path / "v.json", {"llm.temperature": 0.2, "agent.instructions": "Help {company} customers briefly."}
    )
    fresh = BoundParameters([discovered])
    with pytest.raises(UnknownParameters, match=r"\['agent.instructions'\].*pass it with parameters=\[\.\.\.\]"):
        apply_saved(fresh, path)
    assert discovered.value == 0.7  # nothing written
    applied = apply_saved(fresh, path, parameters=[instructions])
    assert applied == {"llm.temperature": 0.2, "agent.instructions": "Help {company} customers briefly."}
    assert discovered.value == 0.2 and instructions.value == "Help {company} customers briefly."
    assert "agent.instructions" not in fresh  # the workflow's own parameters are left as discovered


def test_your_own_parameters_are_validated_before_anything_is_written():
    discovered = Parameter("llm.temperature", "float", 0.7, lower=0, upper=2)
    instructions = Parameter("agent.instructions", "text", "You help {company}.", template=True)
    with pytest.raises(InvalidValue, match=r"must keep \{company\}"):
        apply_saved(
            BoundParameters([discovered]),
            {"llm.temperature": 0.1, "agent.instructions": "Help."},
            parameters=[instructions],
        )
    assert discovered.value == 0.7 and instructions.value == "You help {company}."
    with pytest.raises(ValueError, match="unique"):  # another parameter under a discovered name
        apply_saved(BoundParameters([discovered]), {}, parameters=[Parameter("llm.temperature", "float", 1.0)])
    with pytest.raises(TypeError, match="Parameter objects"):
        apply_saved(BoundParameters([discovered]), {}, parameters=["agent.instructions"])
