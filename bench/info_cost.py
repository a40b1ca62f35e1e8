"""Information and cost of the optimizer's prompt, per framework, against Trace's OptoPrime.

For the "fix the workflow" task (bench/tasks/workflows.py: a cashier workflow with a wrong tax
rate in its prompt, a buggy tool and a too-high temperature), one minibatch of two runs is
traced: one that shows the wrong values (the tool ignores quantities, the model rounds) and one
that raises (an item without a quantity). The optimizer prompt built from it is measured:

- its size in tokens (``opto_core.kernel.render.count_tokens``: tiktoken's cl100k_base when available
  offline, else characters / 3.5; the same counter for every row);
- whether it holds what a fix needs: each faulty parameter among the variables the optimizer
  may change (the prompt with "20%", the tool's buggy line, the temperature 1.3), the values
  that show the fault (the wrong subtotal, the rounded answer), the feedback, and the
  exception's message.

Rows: our OptoPrime on each framework's workflow through its adapter (when installed), ours on
the plain-Python version, and Trace's own OptoPrime (trace-opt 0.1.3.8) on the same plain-Python
version. With ``--budget-tokens`` below the prompt's size, ours also shows what survives its
budgeted render. No LLM is called.

    python -m bench.info_cost [--quick] [--json] [--budget-tokens 8000,1500]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
from typing import Any, Sequence

from bench.tasks import workflows as W
from opto_core.kernel.render import count_tokens

CHECKS = ["var_prompt", "var_tool", "var_temperature", "wrong_subtotal", "model_answer", "feedback", "exception"]
CHECK_HELP = {
    "var_prompt": "the faulty prompt (with '20%') is among the variables",
    "var_tool": "the tool's buggy line is among the variables",
    "var_temperature": "the temperature 1.3 is among the variables",
    "wrong_subtotal": "the tool's wrong subtotal is shown",
    "model_answer": "the model's rounded answer is shown",
    "feedback": "the feedback (expected total) is shown",
    "exception": "the exception's message is shown",
}
EXCEPTION_TEXT = "not enough values to unpack"
BUGGY_LINE = "total += float(price)"


def minibatch(seed: int = 0) -> list[dict[str, Any]]:
    """Two examples: the first whose tool run succeeds with a wrong subtotal, the first that raises."""
    value_case = raise_case = None
    for example in W.generate(200, seed):
        items = example["order"].split(";")
        if all(" x " in item for item in items):
            if value_case is None and any(not item.strip().startswith("1 x") for item in items):
                value_case = example
        elif raise_case is None:
            raise_case = example
        if value_case and raise_case:
            return [value_case, raise_case]
    raise RuntimeError("no suitable examples")


def variables_section(prompt: str) -> str:
    """The text of the #Variables section (Trace and ours both use that header)."""
    match = re.search(r"#Variables\n(.*?)(?:\n#[A-Z][a-z]+\n|\Z)", prompt, re.S)
    return match.group(1) if match else ""


def check(prompt: str, examples: Sequence[dict[str, Any]]) -> dict[str, bool]:
    """Which of the things a fix needs are in the prompt (see CHECK_HELP)."""
    value_case = examples[0]
    wrong = W.order_subtotal(value_case["order"])  # the buggy tool's result, as shipped
    answer = W.answer_policy(W.SYSTEM_PROMPT, wrong, W.TEMPERATURE)
    variables = variables_section(prompt)
    return {
        "var_prompt": "sales tax of 20%" in variables,
        "var_tool": BUGGY_LINE in variables,
        "var_temperature": bool(re.search(r"temperature\w*\s*[=:]\s*1\.3\b", variables)),
        "wrong_subtotal": re.search(rf"(?<![\d.]){re.escape(f'{wrong:g}')}(?![\d])", prompt) is not None,
        "model_answer": answer in prompt,
        "feedback": f"must pay {value_case['expected']:.2f}" in prompt,
        "exception": EXCEPTION_TEXT in prompt,
    }


def _row(system: str, prompt: str, examples: Sequence[dict[str, Any]], seconds: float, **extra: Any) -> dict[str, Any]:
    found = check(prompt, examples)
    return {
        "system": system,
        "tokens": count_tokens(prompt),
        "chars": len(prompt),
        **found,
        "complete": all(found.values()),
        "seconds": round(seconds, 4),
        **extra,
    }


def ours_prompt(target: Any, examples: Sequence[dict[str, Any]], budget_tokens: int) -> str:
    """Our OptoPrime's full prompt (system + user) for one minibatch, as the loop would build it."""
    from opto_core.engine.loop import evaluate
    from opto_core.kernel.backward import backward
    from opto_core.optimizers.optoprime import OptoPrime

    evaluations = evaluate(target, list(examples), W.feedback)
    instances = [backward(e.graph, e.feedback) for e in evaluations]
    messages = OptoPrime(target.parameters(), None, token_budget=budget_tokens).build_messages(instances)
    return "\n".join(m["content"] for m in messages)


def trace_prompt(examples: Sequence[dict[str, Any]]) -> str:
    """Trace's OptoPrime prompt (system + user) for the same minibatch of the plain-Python workflow."""
    from opto import trace
    from opto.optimizers import OptoPrime

    from bench.tasks.traceopt import batch_outputs, evaluate

    program = W.trace_program()
    _, feedbacks = evaluate(program, examples, W.feedback)
    nodes = [program.run(example)[0] for example in examples]
    join = trace.bundle()(batch_outputs)
    text = "\n".join(f"Example {i + 1}: {f.text}" for i, f in enumerate(feedbacks))
    optimizer = OptoPrime(program.parameters, llm=object())  # never called: only the prompt is built
    optimizer.zero_feedback()
    optimizer.backward(join(*nodes), text)
    system, user = optimizer.construct_prompt(optimizer.summarize())
    system = optimizer.replace_symbols(system, optimizer.prompt_symbols)
    user = optimizer.replace_symbols(user, optimizer.prompt_symbols)
    return system + "\n" + user


def measure(
    budgets: Sequence[int] = (8000,),
    seed: int = 0,
    frameworks: Sequence[str] = tuple(W.FRAMEWORKS),
    include_trace: bool = True,
) -> list[dict[str, Any]]:
    examples = minibatch(seed)
    rows: list[dict[str, Any]] = []
    for budget in budgets:
        started = time.perf_counter()
        prompt = ours_prompt(W.python_target(), examples, budget)
        rows.append(_row("ours / plain Python", prompt, examples, time.perf_counter() - started, budget_tokens=budget))
        for framework in frameworks:
            name = f"ours / {framework}"
            missing = W.framework_available(framework)
            if missing:
                rows.append({"system": name, "status": "not available", "reason": missing, "budget_tokens": budget})
                continue
            try:
                target = W.framework_target(W.FRAMEWORKS[framework]())
            except W.AdapterUnavailable as exc:
                rows.append({"system": name, "status": "not available", "reason": str(exc), "budget_tokens": budget})
                continue
            started = time.perf_counter()
            prompt = ours_prompt(target, examples, budget)
            rows.append(_row(name, prompt, examples, time.perf_counter() - started, budget_tokens=budget))
    if include_trace:
        from bench.tasks.traceopt import available

        reason = available()
        if reason:
            rows.append({"system": "Trace OptoPrime / plain Python", "status": "not available", "reason": reason})
        else:
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # trace-opt prints its backend choice
                prompt = trace_prompt(examples)
            rows.append(
                _row(
                    "Trace OptoPrime / plain Python",
                    prompt,
                    examples,
                    time.perf_counter() - started,
                    budget_tokens=None,
                )
            )
    for row in rows:
        row.setdefault("status", "ok")
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = ["system", "budget_tokens", "tokens", *CHECKS, "complete"]
    cells = []
    for row in rows:
        if row.get("status") != "ok":
            cells.append(
                [row["system"], str(row.get("budget_tokens") or "-"), "-", *["-"] * len(CHECKS), f"{row['status']}"]
            )
            continue
        cells.append(
            [
                row["system"],
                str(row.get("budget_tokens") or "-"),
                str(row["tokens"]),
                *("yes" if row[c] else "NO" for c in CHECKS),
                "yes" if row["complete"] else "NO",
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in cells]
    notes = [f"{r['system']}: {r['reason']}" for r in rows if r.get("status") != "ok"]
    legend = [f"{c}: {CHECK_HELP[c]}" for c in CHECKS]
    return "\n".join(lines + [""] + legend + ([""] + notes if notes else []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.info_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--budget-tokens", default="8000,1500", help="comma-separated token budgets for our render (default 8000,1500)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-trace", action="store_true", help="skip trace-opt (its import takes several seconds)")
    parser.add_argument("--quick", action="store_true", help="accepted for uniformity; this benchmark is always quick")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budget_tokens.split(",") if b.strip()]
    with contextlib.redirect_stdout(sys.stderr):
        rows = measure(budgets, args.seed, include_trace=not args.no_trace)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
