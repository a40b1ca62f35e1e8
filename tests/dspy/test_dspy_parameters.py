"""Parameters of real DSPy programs: names, write-back as the next LM call sees it, undo, save/load."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy_programs import FIXED_TOOL, TwoSame, celsius_examples

from opto_adapters.dspy import ProgramParameters, ProgramTarget, load_optimized, save_optimized, sidecar_path
from opto_core import InvalidValue


def by_name(params):
    return {p.name: p for p in params.parameters()}


def validated(params, updates):
    table = by_name(params)
    return {name: table[name].validate(value) for name, value in updates.items()}


def test_names_are_unique_per_predictor_even_with_identical_signatures(make_agent):
    names = set(by_name(ProgramParameters(TwoSame())))
    for predictor in ("first", "second"):
        assert {
            f"{predictor}.instructions",
            f"{predictor}.fields.answer.desc",
            f"{predictor}.demos",
            f"{predictor}.lm.temperature",
            f"{predictor}.lm.max_tokens",
        } <= names
    agent = by_name(ProgramParameters(make_agent()))
    assert {
        "react.instructions",
        "extract.predict.instructions",
        "tools.to_fahrenheit.code",
        "tools.to_fahrenheit.desc",
    } <= set(agent)
    assert not any("finish" in name for name in agent)  # ReAct's own tool is not the user's
    assert agent["tools.to_fahrenheit.code"].kind == "code"
    assert (agent["react.lm.temperature"].lower, agent["react.lm.temperature"].upper) == (0.0, 2.0)
    assert set(by_name(ProgramParameters(dspy.Predict("q -> a")))) >= {"predict.instructions", "predict.demos"}


def test_nested_react_tools_are_named_by_their_path(make_agent):
    class Outer(dspy.Module):
        def __init__(self):
            super().__init__()
            self.agent = make_agent()

        def forward(self, question):
            return self.agent(question=question)

    names = set(by_name(ProgramParameters(Outer())))
    assert {"agent.react.instructions", "agent.tools.to_fahrenheit.code", "agent.extract.predict.demos"} <= names


def test_instructions_field_descriptions_and_demos_reach_the_next_lm_call(two_same, echo_lm):
    target = ProgramTarget(two_same, lm=echo_lm)
    target.apply(
        validated(
            target.params,
            {
                "second.instructions": "Rewrite the draft as one short sentence.",
                "second.fields.answer.desc": "one sentence, no more than ten words",
                "second.demos": [{"question": "draft: yes", "answer": "Yes."}],
            },
        )
    )
    target.run({"question": "q"})
    first_call, second_call = echo_lm.engine.requests[-2:]
    assert second_call.instructions == "Rewrite the draft as one short sentence."
    assert second_call.output_fields["answer"] == "one sentence, no more than ten words"
    assert second_call.demos == [{"question": "draft: yes", "answer": "Yes."}]
    # the first predictor, with the very same signature, is unchanged
    assert first_call.instructions == "Given the fields `question`, produce the fields `answer`."
    assert first_call.output_fields["answer"] == "" and first_call.demos == []


def test_lm_settings_are_per_predictor_and_reach_the_request(two_same, echo_lm):
    target = ProgramTarget(two_same, lm=echo_lm)
    target.apply(validated(target.params, {"first.lm.temperature": 0.0, "second.lm.max_tokens": "256"}))
    target.run({"question": "q"})
    first_call, second_call = echo_lm.engine.requests[-2:]
    assert (first_call.temperature, first_call.max_tokens) == (0.0, None)
    assert (second_call.temperature, second_call.max_tokens) == (None, 256)
    assert two_same.first.config == {"temperature": 0.0} and two_same.second.config == {"max_tokens": 256}
    with pytest.raises(InvalidValue, match="above the upper bound"):
        by_name(target.params)["first.lm.temperature"].validate(3.5)


def test_an_unchanged_unset_setting_stays_unset(two_same):
    params = ProgramParameters(two_same)
    shown = by_name(params)["first.lm.temperature"].value  # the provider default, as shown
    params.apply({"first.lm.temperature": shown})
    assert "temperature" not in two_same.first.config


def test_tool_code_is_rewritten_and_runs(make_agent, agent_lm):
    agent = make_agent()
    target = ProgramTarget(agent, lm=agent_lm)
    example = celsius_examples([100])[0]
    assert target.run(example)[0].answer == "203.0"
    target.apply(validated(target.params, {"tools.to_fahrenheit.code": FIXED_TOOL}))
    output, graph = target.run(example)
    assert output.answer == "212.0"
    assert graph["param:tools.to_fahrenheit.code"].value == FIXED_TOOL
    # a rewritten tool keeps readable source, so it can be rewritten (and saved) again
    assert by_name(target.params)["tools.to_fahrenheit.code"].value == FIXED_TOOL


def test_tool_code_that_changes_the_arguments_is_rejected(make_agent):
    code = by_name(ProgramParameters(make_agent()))["tools.to_fahrenheit.code"]
    with pytest.raises(InvalidValue, match="signature must stay"):
        code.validate("def to_fahrenheit(celsius: float, scale: float = 1.8) -> float:\n    return celsius * scale\n")
    with pytest.raises(InvalidValue, match="signature must stay"):
        code.validate("def to_fahrenheit(kelvin: float) -> float:\n    return kelvin\n")
    with pytest.raises(InvalidValue, match="does not parse"):
        code.validate("def to_fahrenheit(celsius: float) -> float:\n    return (\n")


def test_tool_code_check_compares_the_tool_schema():
    def lookup(city: str, limit: int = 3) -> str:
        """Look a city up."""
        return city * limit

    agent = dspy.ReAct("question -> answer", tools=[lookup])
    code = by_name(ProgramParameters(agent))["tools.lookup.code"]
    # the same signature text, but `str` now means int: the schema the LM is shown would be wrong
    with pytest.raises(InvalidValue, match="arguments must stay"):
        code.validate(
            'from builtins import int as str\n\ndef lookup(city: str, limit: int = 3) -> str:\n    return city\n'
        )
    assert code.validate('def lookup(city: str, limit: int = 3) -> str:\n    return city.upper()\n')


def test_tool_description_rewrites_the_line_react_baked_into_its_instructions(make_agent, agent_lm):
    agent = make_agent()
    target = ProgramTarget(agent, lm=agent_lm)
    target.apply(validated(target.params, {"tools.to_fahrenheit.desc": "Celsius to Fahrenheit; returns a float."}))
    assert agent.tools["to_fahrenheit"].desc == "Celsius to Fahrenheit; returns a float."
    target.run(celsius_examples([1])[0])
    react_call = next(c for c in agent_lm.engine.requests if "next_tool_name" in c.output_fields)
    assert (
        "(1) to_fahrenheit, whose description is <desc>Celsius to Fahrenheit; returns a float.</desc>"
        in react_call.instructions
    )
    assert "Convert a temperature in Celsius" not in react_call.instructions


def test_tool_description_after_the_instructions_were_rewritten(make_agent):
    agent = make_agent()
    params = ProgramParameters(agent)
    new_instructions = (
        "Answer temperature questions with the tools.\n(1) to_fahrenheit: converts.\n(2) finish: ends the episode."
    )
    params.apply(
        validated(params, {"react.instructions": new_instructions, "tools.to_fahrenheit.desc": "Converts C to F."})
    )
    text = agent.react.signature.instructions
    assert text.startswith("Answer temperature questions with the tools.")
    assert "(1) to_fahrenheit, whose description is <desc>Converts C to F.</desc>" in text
    assert "(2) finish: ends the episode." in text


def test_react_instructions_must_keep_the_tools(make_agent):
    instructions = by_name(ProgramParameters(make_agent()))["react.instructions"]
    with pytest.raises(InvalidValue, match="keep listing the tools"):
        instructions.validate("Just answer.")


def test_demos_are_checked_against_the_signature(two_same):
    demos = by_name(ProgramParameters(two_same))["first.demos"]
    with pytest.raises(InvalidValue, match="not fields of the signature"):
        demos.validate([{"question": "q", "reply": "r"}])
    with pytest.raises(InvalidValue, match="none of the input fields"):
        demos.validate([{"answer": "a"}])
    with pytest.raises(InvalidValue, match="JSON array|JSON list|expected a JSON"):
        demos.validate({"question": "q"})
    assert demos.validate('[{"question": "q", "answer": "a"}]') == [{"question": "q", "answer": "a"}]


def test_snapshot_and_restore_put_back_exactly_what_was_there(make_agent):
    agent = make_agent()
    params = ProgramParameters(agent)
    before = params.values()
    signature, func = agent.react.signature, agent.tools["to_fahrenheit"].func
    snapshot = params.snapshot()
    params.apply(
        validated(
            params,
            {
                "tools.to_fahrenheit.code": FIXED_TOOL,
                "tools.to_fahrenheit.desc": "new",
                "react.lm.temperature": 0.3,
                "extract.predict.demos": [{"question": "q"}],
            },
        )
    )
    assert params.values() != before
    params.restore(snapshot)
    assert params.values() == before
    assert agent.react.signature is signature and agent.tools["to_fahrenheit"].func is func
    assert agent.react.config == {} and agent.extract.predict.demos == []


def test_include_and_exclude_freeze_parameters(two_same):
    params = ProgramParameters(two_same, include=["second.*"], exclude=["*.demos"])
    trainable = {p.name for p in params.parameters() if p.trainable}
    assert trainable == {
        "second.instructions",
        "second.fields.answer.desc",
        "second.lm.temperature",
        "second.lm.max_tokens",
    }
    with pytest.raises(ValueError, match="matches no parameter"):
        ProgramParameters(two_same, include=["third.*"])
    lm_names = {
        p.name for p in ProgramParameters(two_same, optimize_lm_settings=False).parameters() if ".lm." in p.name
    }
    assert lm_names == {"first.lm.config", "second.lm.config"}  # the rest of Predict.config, never trainable


def test_a_program_without_predictors_is_refused():
    class Plain(dspy.Module):
        def forward(self, question):
            return dspy.Prediction(answer=question)

    with pytest.raises(ValueError, match="no predictors"):
        ProgramParameters(Plain())


def test_save_and_load_round_trip_with_the_sidecar(tmp_path, make_agent, agent_lm):
    agent = make_agent()
    params = ProgramParameters(agent)
    params.apply(
        validated(
            params,
            {
                "tools.to_fahrenheit.code": FIXED_TOOL,
                "tools.to_fahrenheit.desc": "C to F.",
                "react.lm.temperature": 0.2,
                "extract.predict.instructions": "Read the result.",
                "extract.predict.demos": [{"question": "1 C?", "answer": "33.8"}],
            },
        )
    )
    path = tmp_path / "agent.json"
    side = save_optimized(agent, path)
    assert side == sidecar_path(path) == tmp_path / "agent.opto.json"
    assert json.loads(path.read_text())["react"]["signature"]["instructions"] == agent.react.signature.instructions

    fresh = load_optimized(make_agent(), path)
    assert ProgramParameters(fresh).values() == params.values()
    example = celsius_examples([100])[0]
    output, _ = ProgramTarget(fresh, lm=agent_lm).run(example)
    assert output.answer == "212.0"  # the tool code came back from the sidecar
    assert fresh.react.config == {"temperature": 0.2}
    react_call = next(c for c in reversed(agent_lm.engine.requests) if "next_tool_name" in c.output_fields)
    assert "<desc>C to F.</desc>" in react_call.instructions and react_call.temperature == 0.2

    # DSPy's own load alone cannot restore what only the sidecar holds
    plain = make_agent()
    plain.load(str(path))
    assert plain.tools["to_fahrenheit"].desc != "C to F." and plain.react.config == {}


def test_load_optimized_refuses_a_sidecar_of_another_program(tmp_path, make_agent):
    save_optimized(TwoSame(), tmp_path / "two.json")
    with pytest.raises(ValueError, match="does not have"):
        load_optimized(make_agent(), tmp_path / "two.opto.json")
    with pytest.raises(FileNotFoundError):
        load_optimized(make_agent(), tmp_path / "missing.json")
    (tmp_path / "bad.opto.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_optimized(make_agent(), tmp_path / "bad.opto.json")
