"""The runnable examples run offline and do what their docs say."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
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
