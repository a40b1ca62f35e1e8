"""examples/ag2_two_agents.py runs offline and does what its docstring says."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ag2_two_agents_example_fixes_the_tool_in_one_step():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ag2_two_agents.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "before: What is 2 + 3? -> 'The answer is -1.'" in out
    assert "score before: 0.00, after one step: 1.00 (kept: True); changed: user.tools.add.code" in out
    assert "What is 7 + 8? -> 'The answer is 15.'" in out and "deployed: add(2, 3) = 5" in out
    assert "user has no llm_config: no model parameters" in out
