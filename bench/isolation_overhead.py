"""What ``isolation="process"`` and ``"sandbox"`` add to each evaluation, against ``"none"``.

The workflow is the plain-Python demo of ``opto demo`` (the invoice workflow: a trainable code
parameter and a discount rate, two traced ops): a run costs well under a millisecond of its own, so
what is measured is the isolation itself: sending the example and the step's values to the worker,
applying values there when they changed, returning output and graph as JSON, checking them.

For each level the script evaluates ``rounds`` batches of one example each (the worst case: one
round trip per evaluation) through `Executor.evaluate`, as the loop does, after a warm-up batch,
and prints the median and 90th percentile of the wall time per evaluation and what that adds to
``"none"``. Every fifth batch carries new values (a step's change), so applying values in the
worker is in the figures. It also prints the cost of starting (the first batch: making the worker
template by fork, or starting a fresh interpreter, inside bubblewrap for the sandbox) and the
driver's CPU time per evaluation.

    python -m bench.isolation_overhead             # 400 evaluations per level
    python -m bench.isolation_overhead --quick     # 100
    python -m bench.isolation_overhead --json
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `opto_core` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit_json, machine, make_parser, progress, table
from opto_core.app.demo import build_python_demo
from opto_core.engine.executors import ThreadExecutor
from opto_core.engine.executors.process import ProcessExecutor
from opto_core.engine.sandbox import Sandbox, probe

LEVELS = ("none", "process (fork)", "process (spawn)", "sandbox")


def _executor(level: str) -> Any:
    if level == "none":
        return ThreadExecutor(1)
    if level == "process (fork)":
        return ProcessExecutor(1, start_method="fork")
    if level == "process (spawn)":
        return ProcessExecutor(1, start_method="spawn")
    return ProcessExecutor(1, sandbox=Sandbox())


def measure(level: str, rounds: int) -> dict[str, Any]:
    target, trainset, feedback_fn, _ = build_python_demo()
    values = {p.name: p.value for p in target.parameters() if p.trainable}
    rate = "invoice.discount_rate"
    executor = _executor(level)
    try:
        begun = time.perf_counter()
        if hasattr(executor, "start"):
            executor.start(target)
        first = executor.evaluate(target, trainset[:1], feedback_fn, indices=[0], failure_score=0.0, values=values)
        startup = time.perf_counter() - begun
        assert not first[0].failed, first[0].output
        times: list[float] = []
        cpu_begun = time.process_time()
        for i in range(rounds):
            if i % 5 == 0:  # a step changed a value: the worker applies it before the run
                values = {**values, rate: round(0.05 + (i % 40) / 100, 2)}
            example = trainset[i % len(trainset)]
            started = time.perf_counter()
            (evaluation,) = executor.evaluate(
                target, [example], feedback_fn, indices=[i % len(trainset)], failure_score=0.0, values=values
            )
            times.append(time.perf_counter() - started)
            if evaluation.failed:
                raise RuntimeError(f"{level}: a run failed: {evaluation.output}")
        cpu = (time.process_time() - cpu_begun) / rounds
    finally:
        executor.close()
    times.sort()
    return {
        "level": level,
        "evaluations": rounds,
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": times[int(0.9 * (len(times) - 1))] * 1000,
        "startup_ms": startup * 1000,
        "driver_cpu_ms": cpu * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="evaluations per level (default 400, quick 100)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (100 if args.quick else 400)
    levels = list(LEVELS)
    if not probe().bwrap:
        progress(f"sandbox left out: {probe().bwrap_problem}")
        levels.remove("sandbox")
    rows = []
    for level in levels:
        progress(f"{level}: {rounds} evaluations")
        rows.append(measure(level, rounds))
    base = rows[0]
    for row in rows:
        row["added_median_ms"] = row["median_ms"] - base["median_ms"]
        row["added_p90_ms"] = row["p90_ms"] - base["p90_ms"]
    if args.json:
        emit_json(rows)
        return 0
    info = machine()
    print(
        f"{info['date']}; {info['cpu']}, {info['cpus']} CPUs, Python {info['python']}; load average "
        f"{info['load_average']}"
    )

    def ms(value: float) -> str:
        return f"{value:.2f}"

    print(
        table(
            rows,
            [
                ("level", "isolation", None),
                ("evaluations", "evaluations", None),
                ("median_ms", "median ms/eval", ms),
                ("p90_ms", "p90 ms/eval", ms),
                ("added_median_ms", "added median ms", ms),
                ("added_p90_ms", "added p90 ms", ms),
                ("startup_ms", "first batch ms", ms),
                ("driver_cpu_ms", "driver CPU ms/eval", ms),
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
