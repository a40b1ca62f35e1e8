"""What the hardening of issue 23 costs: the code policy, the guard against writes around the
optimizer, the redactor and the fence, each timed on its own (best of several runs, CPU-bound, no
model involved).

- policy: `Parameter.validate` of a suggested tool body (the allow-list check: parse, scopes,
  resolution against the original's namespace), for a short and a 200-line body;
- guard: `ValueGuard.expect` + `changes` around one batch, for 10 and 200 parameters (text, json);
- redactor: `redact` over 1 MB of text, with 5 and 100 known secrets (every file we write and every
  optimizer request passes through it);
- fence: `fence` over 1 MB of text with a line break every 80 characters (every value in a prompt).

    python bench/hardening_overhead.py           # all rows
    python bench/hardening_overhead.py --quick
    python bench/hardening_overhead.py --json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, emit_json, fmt_s, machine, make_parser, progress, table
from opto_core import Parameter
from opto_core.engine.guard import ValueGuard
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.redact import Redactor
from opto_core.kernel.render import fence

ORIGINAL = '''import json
import re


def parse(text: str) -> dict:
    """Read key=value pairs."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"(\\w+)=(.*)", line)
        if match:
            found[match.group(1)] = json.loads(match.group(2)) if match.group(2).startswith("[") else match.group(2)
    return found
'''


def suggested(lines: int) -> str:
    body = "".join(
        f"    value_{i} = [w.strip().lower() for w in text.split(',') if len(w) > {i % 7}]\n" for i in range(lines)
    )
    return ORIGINAL.replace('    found = {}\n', '    found = {}\n' + body)


def policy_rows(repeats: int) -> list[dict[str, Any]]:
    parameter = Parameter("parse.code", "code", ORIGINAL)
    rows = []
    for lines in (5, 200):
        source = suggested(lines)
        assert parameter.validate(source) == source
        rows.append(
            {
                "part": "code policy",
                "case": f"validate a {lines + 10}-line body",
                "seconds": best_of(repeats, lambda source=source: parameter.validate(source)),
            }
        )
    return rows


def guard_rows(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for count in (10, 200):
        parameters = [
            Parameter(f"p{i}.prompt", "text", "You are a careful assistant. " * 20) for i in range(count // 2)
        ]
        parameters += [
            Parameter(f"p{i}.demos", "json", [{"q": f"question {j}", "a": f"answer {j}"} for j in range(10)])
            for i in range(count - count // 2)
        ]
        target = FunctionTarget(lambda: None, parameters)
        guard = ValueGuard(target)

        def around(guard: ValueGuard = guard) -> None:
            guard.changes(guard.expect())

        rows.append(
            {"part": "guard", "case": f"expect + compare, {count} parameters", "seconds": best_of(repeats, around)}
        )
    return rows


def redactor_rows(repeats: int) -> list[dict[str, Any]]:
    text = ("The run answered with a long text that mentions no secret at all, line after line. " * 12_000)[:1_000_000]
    rows = []
    for count in (5, 100):
        redactor = Redactor(environ={})
        for i in range(count):
            redactor.register(f"zq-bench-secret-{i:04d}-value")
        redactor.redact("warm")
        rows.append(
            {
                "part": "redactor",
                "case": f"1 MB of text, {count} secrets",
                "seconds": best_of(repeats, lambda redactor=redactor: redactor.redact(text)),
            }
        )
    return rows


def fence_rows(repeats: int) -> list[dict[str, Any]]:
    text = ("a value line with some words in it, and then the end of this line ....... end\n" * 13_000)[:1_000_000]
    hostile = text.replace("\n", "\r#Feedback ", 500)
    return [
        {
            "part": "fence",
            "case": "1 MB, a line break every 80 chars",
            "seconds": best_of(repeats, lambda: fence(text)),
        },
        {
            "part": "fence",
            "case": "1 MB, 500 fake headers behind CR",
            "seconds": best_of(repeats, lambda: fence(hostile)),
        },
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = make_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    repeats = 3 if args.quick else 7
    rows: list[dict[str, Any]] = []
    for part in (policy_rows, guard_rows, redactor_rows, fence_rows):
        progress(f"timing {part.__name__[:-5]} ...")
        rows += part(repeats)
    if args.json:
        emit_json([{**row, **machine()} for row in rows])
        return rows
    info = machine()
    print(
        f"{info['date']}, {info['cpu']} ({info['cpus']} CPUs), Python {info['python']}, "
        f"load average {info['load_average']}; best of {repeats}"
    )
    print(table(rows, [("part", "part", None), ("case", "case", None), ("seconds", "time", fmt_s)]))
    return rows


if __name__ == "__main__":
    main()
