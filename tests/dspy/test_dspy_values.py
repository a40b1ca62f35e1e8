"""The DSPy adapter on the kit: stable parameters, apply_values to production, Settings in the teleprompter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dspy
import pytest
from dspy_programs import FIXED_TOOL, celsius_examples, fahrenheit_metric

from opto_adapters.dspy import OptoTeleprompter, ProgramParameters, ProgramTarget, apply_values, save_optimized
from opto_core.engine.settings import Settings
from opto_core.kernel.binding import UnknownParameters
from opto_core.kernel.values import ValuesFileError, save_values
from opto_core.testing import ScriptedLLM

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

OPTIMIZED = {
    "react.instructions": None,  # filled from the agent: the tools must stay listed
    "react.lm.temperature": 0.25,
    "extract.predict.demos": [{"question": "What is 10 C in Fahrenheit?", "answer": "50.0"}],
    "extract.predict.fields.answer.desc": "the number only",
    "tools.to_fahrenheit.code": FIXED_TOOL,
    "tools.to_fahrenheit.desc": "Celsius to Fahrenheit, exactly.",
}


def optimized_values(make_agent):
    values = dict(OPTIMIZED)
    values["react.instructions"] = "Use the tool, then finish.\n" + make_agent().react.signature.instructions
    return values


def answer(reasoning, **suggestion):
    return json.dumps({"reasoning": reasoning, "suggestion": suggestion})


def test_parameters_are_the_same_objects_on_every_read_with_live_values(two_same):
    target = ProgramTarget(two_same)
    first, again = target.parameters(), target.parameters()
    assert [id(p) for p in first] == [id(p) for p in again]
    two_same.second.signature = two_same.second.signature.with_instructions("Changed around the target.")
    table = {p.name: p for p in target.parameters()}
    assert table["second.instructions"] is next(p for p in first if p.name == "second.instructions")
    assert table["second.instructions"].value == "Changed around the target."


def test_an_unknown_include_pattern_is_an_error_listing_the_real_names(two_same):
    with pytest.raises(UnknownParameters) as info:
        ProgramParameters(two_same, exclude=["first.demo"])
    assert "first.demos" in str(info.value) and "first.demo'" in str(info.value)
    frozen = {p.name: p.trainable for p in ProgramParameters(two_same, exclude=["first.*"]).parameters()}
    assert frozen["first.instructions"] is False and frozen["second.instructions"] is True  # frozen, still there


def test_a_failing_write_restores_the_earlier_ones(two_same):
    params = ProgramParameters(two_same)
    before = params.values(trainable_only=False)

    class Exploding(list):
        def __iter__(self):
            raise RuntimeError("demo store is read-only")

    binding = params.binding("second.demos")
    original_write = binding.write
    binding.write = lambda value: original_write(Exploding(value))
    with pytest.raises(Exception, match="second.demos.*demo store is read-only"):
        params.apply({"first.instructions": "New first.", "second.demos": [{"question": "q", "answer": "a"}]})
    assert params.values(trainable_only=False) == before


def test_saved_values_reach_the_next_lm_request_in_a_fresh_process(tmp_path, make_agent):
    agent = make_agent()
    target = ProgramTarget(agent)
    target.apply(optimized_values(make_agent))
    path = tmp_path / "values.json"
    target.save_values(str(path), score=1.0)
    doc = json.loads(path.read_text())
    assert doc["format"] == "opto-values/1" and doc["meta"]["framework"] == "dspy"

    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HERE)!r})
        import dspy
        from dspy_programs import agent_policy, celsius_examples, to_fahrenheit
        from opto_adapters.dspy import apply_values
        from opto_adapters.dspy.testing import rule_lm

        agent = dspy.ReAct("question -> answer", tools=[to_fahrenheit], max_iters=3)
        applied = apply_values(agent, {str(path)!r})
        lm = rule_lm(agent_policy)
        with dspy.context(lm=lm):
            out = agent(question="What is 100 C in Fahrenheit?")
        calls = lm.engine.requests
        react = next(c for c in calls if "next_tool_name" in c.output_fields)
        extract = calls[-1]
        print(json.dumps({{"applied": sorted(applied), "answer": out.answer,
                          "react_instructions": react.instructions, "react_temperature": react.temperature,
                          "extract_demos": extract.demos, "extract_desc": extract.output_fields.get("answer"),
                          "extract_temperature": extract.temperature}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    values = optimized_values(make_agent)
    assert seen["applied"] == sorted(doc["values"])
    assert seen["answer"] == "212.0"  # the saved tool code runs
    assert seen["react_instructions"].startswith("Use the tool, then finish.")
    assert "<desc>Celsius to Fahrenheit, exactly.</desc>" in seen["react_instructions"]
    assert seen["react_temperature"] == 0.25 and seen["extract_temperature"] is None
    (demo,) = seen["extract_demos"]  # DSPy fills the missing reasoning of a ChainOfThought demo
    assert values["extract.predict.demos"][0].items() <= demo.items()
    assert seen["extract_desc"] == "the number only"


def test_apply_values_twice_in_one_process_and_after_the_first_program_is_gone(tmp_path, make_agent, agent_lm):
    import gc

    path = tmp_path / "values.json"
    first = make_agent()
    ProgramTarget(first).apply(optimized_values(make_agent))
    ProgramTarget(first).save_values(str(path))
    del first
    gc.collect()
    for _ in range(2):
        fresh = make_agent()
        applied = apply_values(fresh, path)
        assert applied["tools.to_fahrenheit.code"] == FIXED_TOOL
        assert "tools.to_fahrenheit.code" in {p.name for p in ProgramParameters(fresh).parameters()}
        with dspy.context(lm=agent_lm):
            assert fresh(question="What is 0 C in Fahrenheit?").answer == "32.0"
    again = apply_values(fresh, path)  # the same program twice: same values
    saved = json.loads(path.read_text())["values"]
    assert again == applied and {k: ProgramParameters(fresh).values()[k] for k in saved} == saved


def test_apply_values_refuses_unknown_names_and_writes_nothing(make_agent):
    agent = make_agent()
    before = ProgramParameters(agent).values(trainable_only=False)
    with pytest.raises(UnknownParameters) as info:
        apply_values(agent, {"react.instructions": "x (to_fahrenheit)", "tools.lookup.code": "def lookup(): ..."})
    message = str(info.value)
    assert "tools.lookup.code" in message and "tools.to_fahrenheit.code" in message and "react.demos" in message
    assert ProgramParameters(agent).values(trainable_only=False) == before


def test_apply_values_refuses_a_file_from_another_framework(tmp_path, two_same):
    path = save_values(tmp_path / "lc.json", {"first.instructions": "x"}, {"framework": "langchain-core"})
    with pytest.raises(ValuesFileError, match="langchain-core.*dspy"):
        apply_values(two_same, path)
    (tmp_path / "other.json").write_text(json.dumps({"format": "opto-values/9", "values": {}}))
    with pytest.raises(ValuesFileError, match="opto-values/9"):
        apply_values(two_same, tmp_path / "other.json")


def test_the_save_optimized_sidecar_is_a_values_file_apply_values_reads(tmp_path, make_agent):
    agent = make_agent()
    ProgramTarget(agent).apply(optimized_values(make_agent))
    side = save_optimized(agent, tmp_path / "agent.json")
    assert json.loads(side.read_text())["format"] == "opto-values/1"
    fresh = make_agent()
    apply_values(fresh, side)
    assert fresh.tools["to_fahrenheit"].func(100) == 212.0 and fresh.react.config == {"temperature": 0.25}


def test_the_rest_of_the_lm_config_is_deployed_through_a_binding_that_rolls_back(tmp_path, make_agent):
    agent = make_agent()
    agent.react.config = {"temperature": 0.3, "n": 1, "stop": ["END"]}
    params = ProgramParameters(agent)
    assert params["react.lm.config"].value == {"n": 1, "stop": ["END"]} and not params["react.lm.config"].trainable
    side = save_optimized(agent, tmp_path / "agent.json")
    fresh = make_agent()
    apply_values(fresh, side)
    assert fresh.react.config == {"temperature": 0.3, "n": 1, "stop": ["END"]}

    other = make_agent()  # a write after the LM config fails: the config written before it is restored
    bound = ProgramParameters(other)
    bound.binding("tools.to_fahrenheit.desc").write = lambda value: (_ for _ in ()).throw(OSError("read-only"))
    values = dict(json.loads(side.read_text())["values"])
    with pytest.raises(Exception, match="read-only"):
        bound.apply(values, allow_frozen=True)
    assert other.react.config == {} and other.tools["to_fahrenheit"].desc == make_agent().tools["to_fahrenheit"].desc


def test_a_sidecar_written_before_lm_config_was_a_parameter_still_loads(tmp_path, make_agent):
    old = {
        "format": "opto-values/1",
        "values": {"react.lm.temperature": 0.7},
        "meta": {"framework": "dspy", "lm_config": {"react": {"temperature": 0.4, "n": 2}}},
    }
    path = tmp_path / "old.opto.json"
    path.write_text(json.dumps(old))
    fresh = make_agent()
    apply_values(fresh, path)
    assert fresh.react.config == {"temperature": 0.7, "n": 2}  # the value saved as a parameter wins


def test_compile_result_saves_values_that_a_fresh_program_takes(tmp_path, make_agent, agent_lm):
    llm = ScriptedLLM(
        [answer("fix the offset", **{"tools.to_fahrenheit.code": FIXED_TOOL, "react.lm.temperature": 0.0})],
        repeat_last=True,
    )
    with dspy.context(lm=agent_lm):
        optimized = OptoTeleprompter(
            metric=fahrenheit_metric, llm=llm, max_steps=1, batch_size=3, num_threads=1
        ).compile(make_agent(), trainset=celsius_examples([0, 100, 37]))
        path = optimized.opto_result.save_values(str(tmp_path / "values.json"))
        fresh = make_agent()
        applied = apply_values(fresh, path)
        assert applied["react.lm.temperature"] == 0.0
        assert fresh(question="What is 100 C in Fahrenheit?").answer == "212.0"


def test_teleprompter_takes_settings_and_dspy_style_keywords(tmp_path, two_same, echo_lm):
    settings = Settings(max_steps=0, batch_size=2, num_threads=3, max_errors=4, seed=7)
    tp = OptoTeleprompter(
        metric=lambda g, p: 1.0, llm=ScriptedLLM([]), settings=settings, log_dir=str(tmp_path / "run")
    )
    assert (tp.max_steps, tp.batch_size, tp.num_threads, tp.max_errors, tp.seed) == (0, 2, 3, 4, 7)
    assert tp.run_dir == str(tmp_path / "run")
    # keywords override the Settings; DSPy's own num_threads/max_errors fill what is left unset
    tp = OptoTeleprompter(
        metric=lambda g, p: 1.0, llm=ScriptedLLM([]), settings=settings, num_threads=None, batch_size=1
    )
    with dspy.context(num_threads=5):
        run = tp.run_settings()
    assert (run.num_threads, run.batch_size, run.max_errors, run.seed) == (5, 1, 4, 7)
    assert OptoTeleprompter(auto="heavy").max_steps == 20 and OptoTeleprompter().max_steps == 5
    with dspy.context(max_errors=3):
        assert OptoTeleprompter().run_settings().max_errors == 3
    with pytest.raises(TypeError, match="unknown setting.*num_trails.*max_steps"):
        OptoTeleprompter(num_trails=3)
    with pytest.raises(ValueError, match="batch_size"):
        OptoTeleprompter(batch_size=0)
    trainset = [dspy.Example(question="q", answer="q").with_inputs("question")]
    with dspy.context(lm=echo_lm):
        optimized = tp.compile(two_same, trainset=trainset)
    assert optimized.opto_result.steps == 0 and optimized.score == 1.0
    assert (Path(optimized.opto_report) / "program.opto.json").exists()  # a fresh temporary run directory


def test_graphs_carry_the_kit_meta_keys_and_mark_the_output(two_same, echo_lm):
    from opto_core.kernel.graph import META_KEYS

    _, graph = ProgramTarget(two_same, lm=echo_lm).run({"question": "why?"})
    assert set(META_KEYS) <= set(graph.meta)
    assert (graph.meta["adapter"], graph.meta["framework"]) == ("opto_adapters.dspy", "dspy")
    assert graph.meta["usage"]["prompt_tokens"] > 0 and graph.meta["duration_s"] >= 0
    assert "token_usage" not in graph.meta and "output_node" not in graph.meta
    assert len(graph.outputs) == 1


def test_arun_gives_the_same_output_and_graph_shape_as_run(two_same, echo_lm):
    import asyncio

    target = ProgramTarget(two_same, lm=echo_lm)
    output, graph = target.run({"question": "q?"})
    async_output, async_graph = asyncio.run(target.arun({"question": "q?"}))
    assert async_output.answer == output.answer and type(async_output.answer) is str
    assert sorted(n.id for n in async_graph.nodes) == sorted(n.id for n in graph.nodes)
    assert async_graph.meta["usage"]["prompt_tokens"] > 0
