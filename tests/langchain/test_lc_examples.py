"""The LangChain example runs offline and does what its docstring says."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_langchain_fix_tool_example():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_fix_tool.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "answer:   The total is 48   (expected Total: $45.00)" in out  # the planted bug, cut at 4 tokens
    assert "compute_total#0 <- tool_call=EchoChatModel#0, code=param:tools.compute_total.code" in out
    assert "scratchpad[1]=compute_total#0" in out  # the tool's answer flows into the second model call
    assert "score on the held-out examples before: 0.00, after one step: 1.00 (kept: True)" in out
    assert "changed in one step: model.max_tokens, prompt.system, tools.compute_total.code" in out
    assert "'Items: 12.50, 37.50; discount 10%' -> 'Total: $45.00'" in out
    assert "discount_percent / 100" in out
