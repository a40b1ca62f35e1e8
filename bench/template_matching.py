"""Template matching: linear in the text, where a backtracking regular expression is not.

`opto_core.kernel.templates.Template.match` finds each literal at its leftmost occurrence, left to
right, with no backtracking. The same rule written as a regular expression (each placeholder a lazy
``(.*?)``) backtracks: on a text that almost matches, its work grows with the text's length to the
power of the number of placeholders. Both are timed here for the template ``"{a}x{b}x{c}z{d}y"`` on
the adversarial text ``"x" * n + "y"`` (no ``z``: no match, but every split of the x's is a candidate)
and on a text that matches (``"x" * n + "zy"``). The regex is timed only up to a size where it still
ends within a minute.

Then the provenance lookup a tracer makes per consumed message: a 4,000-character prompt looked up
in an index holding 50 template parameters and 500 produced texts (the template rule and the
containment rule both scan them).

    python bench/template_matching.py          # n up to 1,000,000
    python bench/template_matching.py --quick  # n up to 100,000
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, emit_json, fmt_s, machine, make_parser, progress, table
from opto_core.kernel.provenance import ProvenanceIndex
from opto_core.kernel.templates import Template

REGEX_LIMIT = 400  # characters: beyond this the lazy regex takes minutes on the adversarial text


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def matching_rows(sizes: list[int]) -> list[dict]:
    template = Template.parse("{a}x{b}x{c}z{d}y")
    regex = re.compile(r"(.*?)x(.*?)x(.*?)z(.*?)y", re.DOTALL)
    rows = []
    for n in sizes:
        progress(f"n = {n:,}")
        miss, hit = "x" * n + "y", "x" * n + "zy"
        row = {
            "n": n,
            "template_miss": best_of(3, lambda miss=miss: template.match(miss)),
            "template_hit": best_of(3, lambda hit=hit: template.match(hit)),
        }
        if n <= REGEX_LIMIT:
            row["regex_miss"] = best_of(1, lambda miss=miss: regex.fullmatch(miss))
            row["regex_hit"] = best_of(3, lambda hit=hit: regex.fullmatch(hit))
        rows.append(row)
    return rows


def lookup_row() -> dict:
    index = ProvenanceIndex()
    for i in range(500):
        index.register(f"answer number {i}: the order {i} shipped on day {i % 30} from warehouse {i % 7}", f"t{i}")
    for i in range(50):
        index.register_template(
            f"System {i}: you are the agent of {{company}}. Rule {i}: answer about {{topic}}.", f"p{i}"
        )
    prompt = (
        "System 49: you are the agent of Acme. Rule 49: answer about "
        + "refunds and returns. " * 180
        + " answer number 42: the order 42 shipped on day 12 from warehouse 0"
    )[:4000]
    found = index.find_all(prompt)
    assert {m.node for m in found} == {"p49", "t42"}, found  # the template output and the quoted answer
    return {"n": len(prompt), "lookup": best_of(20, lambda: index.find_all(prompt)), "producers": len(found)}


def main() -> None:
    args = make_parser(__doc__.splitlines()[0]).parse_args()
    sizes = [100, 200, 400, 10_000, 100_000] + ([] if args.quick else [1_000_000])
    rows = matching_rows(sizes)
    lookup = lookup_row()
    if args.json:
        emit_json([*rows, lookup])
        return
    print(machine())
    print(
        table(
            rows,
            [
                ("n", "text length", lambda v: f"{v:,}"),
                ("template_miss", "Template.match, no match", fmt_us),
                ("regex_miss", "lazy regex, no match", fmt_s),
                ("template_hit", "Template.match, match", fmt_us),
                ("regex_hit", "lazy regex, match", fmt_us),
            ],
        )
    )
    print()
    print(
        f"provenance lookup of a {lookup['n']:,}-character prompt (50 templates, 500 texts): "
        f"{fmt_s(lookup['lookup'])} per lookup, {lookup['producers']} producers found"
    )


if __name__ == "__main__":
    main()
