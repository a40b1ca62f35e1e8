"""OptoTeleprompter against DSPy's own optimizers (COPRO, MIPROv2 light, GEPA) on DSPy programs.

    python -m bench.dspy_compare --base-url URL --model M [--budget-calls 10] [--quick] [--json]

The tasks are made by code, in the style of Big-Bench Hard, with programmatic metrics (boolean
expressions, multi-step arithmetic, word sorting, object counting, Dyck languages, date arithmetic)
plus a two-predictor DSPy workflow; nothing is downloaded. Every optimizer gets the same task model,
the same optimizer model and temperature, and the same budget of optimizer LLM calls (a counting
client refuses call N+1); the table gives the test score before and after, the optimizer's calls
and tokens, and the task model's calls. This is `bench.compare` restricted to the DSPy optimizers:
every flag of ``python -m bench.compare --help`` works here too.

Any OpenAI-compatible endpoint works (``--base-url``, ``--model``, key in ``OPENAI_API_KEY``). On the
embedded local model (SmolLM2-135M, the default without an endpoint) the rows only show that the
plumbing works: that model is far too small to judge any optimizer's quality.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import compare

OPTIMIZERS = "opto-dspy,copro,mipro,gepa"
TASKS = "bbh,workflow_dspy"
QUICK_TASKS = "boolean_expressions,workflow_dspy"


def with_defaults(argv: Sequence[str]) -> list[str]:
    """The command line for `bench.compare`, with this script's defaults where none were given."""
    args = list(argv)
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    if "--optimizers" not in given:
        args += ["--optimizers", OPTIMIZERS]
    if "--tasks" not in given:
        args += ["--tasks", QUICK_TASKS if "--quick" in given else TASKS]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = with_defaults(sys.argv[1:] if argv is None else argv)
    if "--help" not in args and "-h" not in args:
        print(
            "note: on the embedded local model these figures check the plumbing only; judging the optimizers "
            "needs a capable model (--base-url/--model)",
            file=sys.stderr,
        )
    return compare.main(args)


if __name__ == "__main__":
    sys.exit(main())
