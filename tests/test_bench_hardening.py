"""Smoke test of bench/hardening_overhead.py: every row is produced (no timing is asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import hardening_overhead  # noqa: E402


def test_every_part_is_timed(capsys):
    rows = hardening_overhead.main(["--quick", "--json"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(printed) == len(rows) == 8
    assert {row["part"] for row in rows} == {"code policy", "guard", "redactor", "fence"}
    assert all(row["seconds"] > 0 for row in rows)
