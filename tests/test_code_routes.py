"""Every route class of issue 23's probe is closed by the code policy, under plain Python (`@op`), a
LangChain tool and a DSPy tool: the suggestion is refused with the route's reason, and the marker file
it would write never appears. The payloads are live: run without the policy, each leaves its effect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from code_routes import EXIT_ROUTES, LEAKS, LEGITIMATE, NO_MARKER, routes, tidy

from opto_core import InvalidValue, optimize
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.code import function_source
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

ROUTES = list(routes("/m"))
HERE = Path(__file__).parent
ROOT = HERE.parent


def _plain_target():
    traced = op(trainable=True, parameter_name="tidy.code")(tidy)
    target = FunctionTarget(lambda text: traced(text), [traced], input_keys=["text"])
    return target, "tidy.code", lambda: target.run({"text": "a  b"})[0]


def _langchain_target():
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool

    from opto_adapters.langchain import ChainTarget

    wrapped = tool(tidy)
    return ChainTarget(wrapped), "tools.tidy.code", lambda: wrapped.invoke({"text": "a  b"})


def _dspy_target():
    dspy = pytest.importorskip("dspy")
    from opto_adapters.dspy import ProgramTarget

    react = dspy.ReAct("question -> answer", tools=[tidy])
    return ProgramTarget(react), "tools.tidy.code", lambda: react.tools["tidy"].func("a  b")


BUILDERS = {"plain": _plain_target, "langchain": _langchain_target, "dspy": _dspy_target}


@pytest.mark.parametrize("framework", list(BUILDERS))
@pytest.mark.parametrize("route", ROUTES)
def test_every_route_class_is_refused_and_leaves_no_marker(framework, route, tmp_path):
    target, name, call = BUILDERS[framework]()
    marker = tmp_path / "outside" / "marker"
    marker.parent.mkdir()
    source, reason = routes(str(marker))[route]
    parameter = {p.name: p for p in target.parameters()}[name]
    original = parameter.value
    with pytest.raises(InvalidValue) as info:
        target.apply({name: source})
    assert reason in info.value.reason, info.value.reason
    assert parameter.value == original
    assert call() == "a b"  # the tool still runs, as the original
    assert not marker.exists()


@pytest.mark.parametrize("framework", list(BUILDERS))
def test_the_originals_own_imports_and_safe_rewrites_stay_allowed(framework):
    target, name, call = BUILDERS[framework]()
    snapshot = target.snapshot()
    try:
        for label, source in LEGITIMATE.items():
            target.apply({name: source})
            assert call() == "a b", label
    finally:
        target.restore(snapshot)


_LIVENESS = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from code_routes import routes, tidy
from opto_core.kernel.code import compile_like
source = routes({marker!r})[{route!r}][0]
print(compile_like(source, tidy)("a b"))   # no policy: what the payload does when nothing checks it
print("survived")
"""


@pytest.mark.parametrize("route", ROUTES)
def test_each_payload_is_live_without_the_policy(route, tmp_path):
    """The refusals above mean something: compiled and called with no check, each payload acts."""
    marker = tmp_path / "marker"
    (tmp_path / "test_mark.py").write_text(f"open({str(marker)!r}, 'w').close()\n")  # for unittest.__main__
    script = tmp_path / "live.py"
    script.write_text(_LIVENESS.format(root=str(ROOT), tests=str(HERE), marker=str(marker), route=route))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if route in LEAKS:
        assert LEAKS[route] in done.stdout, done.stderr
    elif route in NO_MARKER:
        assert "survived" in done.stdout and not marker.exists(), done.stderr
    elif route in EXIT_ROUTES:
        assert "survived" not in done.stdout, (done.stdout, done.stderr)
        if EXIT_ROUTES[route] is not None:
            assert done.returncode == EXIT_ROUTES[route], done.stderr
    else:
        assert marker.exists(), (route, done.stdout, done.stderr)


def test_a_proposed_payload_is_rejected_in_a_run_and_its_reason_reaches_the_optimizer(tmp_path):
    marker = tmp_path / "marker"
    traced = op(trainable=True, parameter_name="tidy.code")(tidy)
    target = FunctionTarget(lambda text: traced(text), [traced], input_keys=["text"])
    payload = routes(str(marker))["module through module"][0]
    answer = json.dumps({"reasoning": "r", "suggestion": {"tidy.code": payload}})
    llm = ScriptedLLM([answer], repeat_last=True)
    result = optimize(
        target,
        [{"text": "a  b"}],
        lambda example, output: float(output == "a b"),
        OptoPrime(target.parameters(), llm),
        max_steps=1,
        run_dir=str(tmp_path / "run"),
    )
    step = result.history[1]
    assert "reaches the module 'os'" in step["proposal"]["rejected"]["tidy.code"]
    assert "reaches the module 'os'" in llm.requests[1]["messages"][-1]["content"]  # the retry says why
    assert result.best_values["tidy.code"] == function_source(tidy)
    assert not marker.exists()


def test_an_edited_checkpoint_payload_never_runs_on_resume(tmp_path):
    marker = tmp_path / "marker"
    traced = op(trainable=True, parameter_name="tidy.code")(tidy)

    def build():
        return FunctionTarget(lambda text: traced(text), [traced], input_keys=["text"])

    run_dir = tmp_path / "run"
    target = build()
    optimize(
        target,
        [{"text": "a  b"}],
        lambda e, o: 1.0,
        OptoPrime(target.parameters(), ScriptedLLM(['{"reasoning": "", "suggestion": {}}'], repeat_last=True)),
        max_steps=1,
        run_dir=str(run_dir),
    )
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    for key in ("current", "best"):
        checkpoint[key]["tidy.code"] = routes(str(marker))["codecs.open"][0]
    checkpoint["done"] = False
    (run_dir / "checkpoint.json").write_text(json.dumps(checkpoint))
    target = build()
    with pytest.raises(Exception) as info:
        optimize(
            target,
            [{"text": "a  b"}],
            lambda e, o: 1.0,
            OptoPrime(target.parameters(), ScriptedLLM(['{"reasoning": "", "suggestion": {}}'], repeat_last=True)),
            max_steps=3,
            run_dir=str(run_dir),
        )
    assert "codecs.open" in str(info.value)
    assert target.run({"text": "a  b"})[0] == "a b"
    assert not marker.exists()
    assert textwrap.dedent(target.parameters()[0].value) == function_source(tidy)


SANDBOXED = {"plain": lambda: _plain_target()[:2], "langchain": lambda: _langchain_target()[:2]}


@pytest.mark.parametrize("framework", list(SANDBOXED))
def test_under_the_sandbox_no_payload_has_an_effect_outside_the_box_even_without_the_policy(framework):
    """The box is the wall: with the policy off (``permissive``), every payload of the probe is applied
    and run in ``isolation="sandbox"``, one step each, and no marker appears outside the box (a folder
    of the repository, which the box sees read-only); the run goes on through every step. Compiling a
    value in this process (a LangChain tool needs a function) runs no module that was not loaded."""
    outside = ROOT / f".opto-route-markers-{os.getpid()}-{framework}"
    outside.mkdir()
    try:
        payloads = [source for source, _ in routes(str(outside / "marker")).values()]
        target, name = SANDBOXED[framework]()
        answers = [json.dumps({"reasoning": "r", "suggestion": {name: source}}) for source in payloads]
        result = optimize(
            target,
            [{"text": "a  b"}],
            lambda example, output: float(output == "a b"),
            OptoPrime(target.parameters(), ScriptedLLM(answers)),
            max_steps=len(payloads),
            code_policy="permissive",
            isolation="sandbox",
            eval_timeout=60,
            reuse_evaluations=False,
        )
        assert list(outside.iterdir()) == []
        assert result.stopped_reason == "max_steps" and result.steps == len(payloads)
        for source, record in zip(payloads, result.records[1:]):  # each payload ran in the box, or never ran
            assert (record.candidate_values or {}).get(
                name
            ) == source or "a module not loaded in this process" in record.apply_error, (source, record.decision)
        if framework == "langchain":  # the tool's function is compiled here too: the import that would run is refused
            refused = result.records[1 + list(routes("/m")).index("unittest.__main__")]
            assert "imports 'unittest.__main__' at module level" in refused.apply_error
    finally:
        for path in outside.iterdir():
            path.unlink()
        outside.rmdir()
