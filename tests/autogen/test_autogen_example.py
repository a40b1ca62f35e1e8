"""The AutoGen example runs offline and does what its docstring says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_writer_critic_example():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "autogen_writer_critic.py"), "--show-problem"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "before: critic says 'REJECTED: 37 words (limit 8)'" in out
    assert (
        "critic_tool_check_length0 = critic.tool.check_length(arguments=critic_tool_request0, "
        "code=critic.tools.check_length.code)" in out
    )  # the problem OptoPrime reads
    assert "score: 0.0 -> 1.0" in out
    assert "changed: ['critic.tools.check_length.code', 'writer.system_message']" in out
    assert "after: critic says 'APPROVED: 7 words (limit 8)'" in out
    assert "write-back seen on the next recorded requests: ['writer.system_message']" in out
    assert "Token count" not in done.stderr
