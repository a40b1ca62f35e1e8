"""The runnable examples run offline and do what their docs say."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_tracing_basics():
    out = run_example("tracing_basics.py")
    assert "untraced: hello, ada!" in out
    assert "shout0 = shout(text=compose0, __code=shout.code)" in out
    assert "after one step: WELCOME, ADA!" in out


def test_coverage_check():
    out = run_example("coverage_check.py")
    assert "support.system     yes 2/2  support.system -> answer (output)" in out
    assert "support.signature  NO       its value was never seen in any call" in out
    assert "pricing.discount   NO       seen off the path to the output: it feeds price" in out
    assert "CoverageError: stopped before any optimizer call: require_coverage=True" in out


@pytest.mark.parametrize(
    "program,changed,carried",
    [
        (
            "python",
            "agent_1.system",
            "'You write a very short first draft about the topic.', 'You summarize a draft in one sentence.'",
        ),
        ("agents", "agent_2.system", "'You write a very short two-line poem from the weather report.'"),
        ("node", "agent_1.system", "'You write a very short first draft about the topic you are given.'"),
    ],
)
def test_gateway_any_program(program, changed, carried, tmp_path):
    """docs/gateway.md sections 1-3: an unmodified program optimized through the gateway (offline stand-in)."""
    values = tmp_path / "best.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "gateway_any_program.py"), program, "--values-out", str(values)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert f"changed: {changed}:" in out and carried in out.split("next run (program unchanged)")[1]
    assert "<- agent_1.message" in out or "agent_1.tool_results             <- agent_1.tool.get_weather" in out
    assert changed in json.loads(values.read_text())["meta"]["gateway"]


def test_gateway_traces_import_and_optimize(tmp_path):
    """docs/gateway.md section 5: OpenInference spans of the example program, then `opto import --optimize`
    with the stand-in model answering the optimizer."""
    example = str(ROOT / "examples" / "gateway_any_program.py")
    server = subprocess.Popen(
        [sys.executable, example, "stand-in", "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        url = server.stdout.readline().split("stand-in model: ")[1].split()[0]
        traces = tmp_path / "traces.json"
        done = subprocess.run(
            [sys.executable, example, "traces", str(traces)], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert done.returncode == 0 and "6 spans written" in done.stdout, done.stderr[-3000:]
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from opto_core.app.cli import main; main()",
                "import",
                str(traces),
                "--feedback-attribute",
                "eval.score",
                "--optimize",
                "--values-out",
                str(tmp_path / "proposed.json"),
                "--base-url",
                url,
                "--model",
                "stand-in",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={**os.environ, "OPENAI_API_KEY": "unused"},
        )
    finally:
        server.terminate()
        server.wait(30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 traces, 4 LLM calls" in done.stdout
    assert "+You write a very short first draft about the topic." in (tmp_path / "proposed.diff").read_text()
    proposed = json.loads((tmp_path / "proposed.json").read_text())
    assert proposed["values"]["agent_1.system"] == "You write a very short first draft about the topic."
