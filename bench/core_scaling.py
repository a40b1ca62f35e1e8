"""How the OPTO core scales: graph build, backward, render, prompt size and peak memory.

Four graph shapes, each of size N:

- ``add-chain``: N traced additions ``y = add(y, 1)`` after one trainable float ``x``
  (built with ``opto_core.kernel.trace``: ``@op`` and ``capture``);
- ``function-chain``: N calls of one trainable code op ``step``, each feeding the next
  (``@op(trainable=True)``, so every call has the code parameter as a parent);
- ``fan-in``: the sum of N trainable floats ``p0 .. p{N-1}``, as Python's ``sum`` computes it
  (N-1 traced binary additions);
- ``agent-turns``: N LLM-like turns that all read one trainable system prompt, each with a user
  message, the previous turn as context (a ``context`` edge) and a 400-character reply; the last
  reply goes to a tool that raised, so the output with feedback is an exception. Built directly
  with ``Graph.add`` (the graph an adapter would emit), which keeps the build time out of the way.

For each shape and N the script prints the build, backward and render times (render budget
8,000 tokens by default), the rendered tokens, whether the prompt is within its budget and still
holds every variable, the feedback and the exception, and the peak memory (tracemalloc, in a
separate pass so that it does not slow the timed one). It also times ``python -c "import opto_core"``.

Where ``trace-opt`` (import name ``opto``, the bench extra) is installed, the same shapes are built
with its API (``node``, ``bundle``, ``Node.backward``, then ``OptoPrime.summarize`` +
``construct_prompt``, which is its problem rendering) in a subprocess per case with a time limit,
and its figures are printed side by side with the ratio. trace-opt's backward is quadratic and its
summarize up to cubic, so a case whose time, extrapolated from the previous N with the growth
measured so far (at least N^2), exceeds the limit is skipped without running ("skipped (too slow)").
With ``--quick`` the small trace-opt cases share one subprocess (its import alone takes seconds).

Tokens are counted for both with ``opto_core.kernel.render.count_tokens`` (tiktoken's cl100k_base when
its file is cached locally, else characters / 3.5; the output says which was used).

    python bench/core_scaling.py            # full run
    python bench/core_scaling.py --quick    # N = 100 and 1,000, trace-opt at N = 100 only
    python bench/core_scaling.py --json     # one JSON object per row
    python bench/core_scaling.py --profile fan-in 1000   # cProfile of one opto_core case
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, emit_json, fmt_mb, fmt_num, fmt_s, machine, make_parser, progress, table
from opto_core import Edge, Feedback, Graph, Parameter, backward, render
from opto_core.kernel.render import DEFAULT_BUDGET
from opto_core.kernel.tokens import _encoder, count_tokens
from opto_core.kernel.trace import capture, op

SHAPES = ("add-chain", "function-chain", "fan-in", "agent-turns")
SIZES = (100, 1_000, 5_000, 20_000)
CHAIN_EXTRA = 100_000  # the add-chain also runs at this size
QUICK_SIZES = (100, 1_000)
TRACE_OPT_LIMIT_S = 60.0
REPLY_CHARS = 400
SYSTEM_PROMPT = (
    "You are a support agent for an online shop. Answer the customer's question politely, in at most "
    "three sentences, and call the refund tool only when the order number is known."
)
TOOL_ERROR = "refund tool failed: order number 'unknown' is not a valid order id"

Expectation = dict[str, Any]  # variables: list of names; exception: text or None


# ----- opto_core builders ------------------------------------------------------------------------------
@op
def add(x, y):
    """Add x and y."""
    return x + y


@op(trainable=True, parameter_name="step.code")
def step(x):
    """Add one to x."""
    return x + 1


def build_add_chain(n: int) -> tuple[Graph, Feedback, Expectation]:
    x = Parameter("x", "float", 1.0, description="the starting value")
    with capture("add-chain") as run:
        y = add(x, 1)
        for _ in range(n - 1):
            y = add(y, 1)
        run.mark_output(y)
    feedback = Feedback(0.0, f"The result should be 0, but it is {float(y):g}; make it smaller.")
    return run.graph, feedback, {"variables": ["x"], "exception": None}


def build_function_chain(n: int) -> tuple[Graph, Feedback, Expectation]:
    with capture("function-chain") as run:
        y = run.input("start", 0)
        for _ in range(n):
            y = step(y)
        run.mark_output(y)
    feedback = Feedback(0.0, f"The result should be {2 * n}, but it is {int(y)}; each step must add two.")
    return run.graph, feedback, {"variables": [step.code.name], "exception": None}


def build_fan_in(n: int) -> tuple[Graph, Feedback, Expectation]:
    params = [Parameter(f"p{i}", "float", float(i % 10)) for i in range(n)]
    with capture("fan-in") as run:
        total = add(params[0], params[1]) if n > 1 else add(params[0], 0)
        for parameter in params[2:]:
            total = add(total, parameter)
        run.mark_output(total)
    feedback = Feedback(0.0, f"The sum should be 0, but it is {float(total):g}; make every term smaller.")
    return run.graph, feedback, {"variables": [p.name for p in params], "exception": None}


def _reply(i: int) -> str:
    text = f"Turn {i}: thank you for your message. "
    filler = "I have checked the order history and the shipping status for you. "
    return (text + filler * (REPLY_CHARS // len(filler) + 1))[:REPLY_CHARS]


def build_agent_turns(n: int) -> tuple[Graph, Feedback, Expectation]:
    graph = Graph(meta={"adapter": "bench", "shape": "agent-turns"})
    system = Parameter("system_prompt", "text", SYSTEM_PROMPT, description="the agent's system prompt")
    system_id = graph.add_parameter(system).id
    previous: str | None = None
    for i in range(n):
        user = graph.add("input", "user", f"Customer message {i}: where is my order, and can I get a refund?").id
        parents = [Edge(system_id, "system"), Edge(user, "user")]
        if previous is not None:
            parents.append(Edge(previous, "context", "context"))
        previous = graph.add(
            "op",
            "chat",
            _reply(i),
            parents=parents,
            op_type="llm",
            doc="[chat] One chat-model turn: system prompt, earlier turn and user message in, reply out.",
        ).id
    graph.add_exception(
        "refund",
        ValueError(TOOL_ERROR),
        parents=[Edge(previous, "request")],
        op_type="tool",
        doc="[refund] The refund tool: takes the agent's request, issues a refund.",
    )
    feedback = Feedback(
        0.0, "The refund tool was called without a valid order number; the agent must ask for the order number first."
    )
    return graph, feedback, {"variables": ["system_prompt"], "exception": f"ValueError: {TOOL_ERROR}"}


BUILDERS: dict[str, Callable[[int], tuple[Graph, Feedback, Expectation]]] = {
    "add-chain": build_add_chain,
    "function-chain": build_function_chain,
    "fan-in": build_fan_in,
    "agent-turns": build_agent_turns,
}


# ----- checking a rendered prompt ------------------------------------------------------------------------
_VAR_LINE = re.compile(r"^\([^)]*\) ([^=\s]+)=", re.MULTILINE)


def _section(text: str, title: str) -> str:
    start = text.find(f"{title}\n")
    if start < 0:
        return ""
    start += len(title) + 1
    end = text.find("\n#", start)
    return text[start:] if end < 0 else text[start:end]


def check_prompt(text: str, budget: int, feedback: Feedback, expect: Expectation) -> dict[str, Any]:
    """Within budget; every variable listed in #Variables; the feedback; the exception (if any)."""
    shown = set(_VAR_LINE.findall(_section(text, "#Variables")))
    missing = [name for name in expect["variables"] if name not in shown]
    code = [line for line in _section(text, "#Code").splitlines() if line and not line.startswith("# ...")]
    tokens = count_tokens(text)
    return {
        "tokens": tokens,
        "chars": len(text),
        "within_budget": tokens <= budget,
        "all_variables": not missing,
        "missing_variables": len(missing),
        "has_feedback": feedback.render() in text,
        "has_exception": None if expect["exception"] is None else expect["exception"] in text,
        "code_lines_shown": len(code),
    }


# ----- measuring opto_core -------------------------------------------------------------------------------
def measure_core(shape: str, n: int, budget: int) -> dict[str, Any]:
    """Timed passes (best of 3 up to N=20,000) then one tracemalloc pass for the peak.

    Wall times are what the targets are about; CPU times (``time.process_time``) are recorded
    too because on a shared machine they are far less disturbed by other processes."""
    build = BUILDERS[shape]
    repeats = 3 if n <= 20_000 else 1
    best = {
        "build_s": math.inf,
        "backward_s": math.inf,
        "render_s": math.inf,
        "build_cpu_s": math.inf,
        "backward_render_cpu_s": math.inf,
    }
    result: dict[str, Any] = {}
    for _ in range(repeats):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        graph, feedback, expect = build(n)
        c1, t1 = time.process_time(), time.perf_counter()
        instance = backward(graph, feedback)
        t2 = time.perf_counter()
        text = render(instance, budget)
        c3, t3 = time.process_time(), time.perf_counter()
        for key, value in (
            ("build_s", t1 - t0),
            ("backward_s", t2 - t1),
            ("render_s", t3 - t2),
            ("build_cpu_s", c1 - c0),
            ("backward_render_cpu_s", c3 - c1),
        ):
            best[key] = min(best[key], value)
        result = {
            "nodes": len(graph),
            "ops_on_path": len(instance.code),
            "variables": len(instance.variables),
            **check_prompt(text, budget, feedback, expect),
        }
        del graph, instance, text
    gc.collect()
    tracemalloc.start()
    try:
        graph, feedback, _ = build(n)
        instance = backward(graph, feedback)
        render(instance, budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del graph, instance
    gc.collect()
    return {**best, "backward_render_s": best["backward_s"] + best["render_s"], **result, "peak_bytes": peak}


def profile_core(shape: str, n: int, budget: int) -> str:
    """cProfile of backward + render for one case (the build is not profiled)."""
    import cProfile
    import io
    import pstats

    count_tokens("load the token counter first, so that its one-time set-up is not profiled")
    graph, feedback, _ = BUILDERS[shape](n)
    profiler = cProfile.Profile()
    profiler.enable()
    render(backward(graph, feedback), budget)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return out.getvalue()


# ----- trace-opt (run in a subprocess per case) -----------------------------------------------------------------
def traceopt_installed() -> bool:
    return importlib.util.find_spec("opto") is not None


def traceopt_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("trace-opt")
    except Exception:
        return None


class _NoLLM:
    """trace-opt's OptoPrime wants an LLM object; the benchmark never calls it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the benchmark does not call the LLM")


def traceopt_case(shape: str, n: int, memory: bool) -> dict[str, Any]:
    """Build, backward and prompt for one case with trace-opt's own API (inside the subprocess)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    from opto.optimizers import OptoPrime
    from opto.trace import bundle, node
    from opto.trace.bundle import ExecutionError

    if memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    if shape == "add-chain":
        x = node(1.0, name="x", trainable=True, description="the starting value")
        y = x + 1
        for _ in range(n - 1):
            y = y + 1
        params, out = [x], y
        feedback = Feedback(0.0, f"The result should be 0, but it is {float(y.data):g}; make it smaller.")
    elif shape == "function-chain":

        @bundle(trainable=True)
        def step(x):
            """Add one to x."""
            return x + 1

        y = node(0, name="start")
        for _ in range(n):
            y = step(y)
        params, out = step.parameters(), y
        feedback = Feedback(0.0, f"The result should be {2 * n}, but it is {int(y.data)}; each step must add two.")
    elif shape == "fan-in":
        params = [node(float(i % 10), name=f"p{i}", trainable=True) for i in range(n)]
        total = params[0] + params[1] if n > 1 else params[0] + 0
        for p in params[2:]:
            total = total + p
        out = total
        feedback = Feedback(0.0, f"The sum should be 0, but it is {float(total.data):g}; make every term smaller.")
    elif shape == "agent-turns":

        @bundle()
        def chat(system, user, context):
            """[chat] One chat-model turn: system prompt, earlier turn and user message in, reply out."""
            return _reply(int(user.split(" ")[2].rstrip(":")))

        @bundle()
        def refund(request):
            """[refund] The refund tool: takes the agent's request, issues a refund."""
            raise ValueError(TOOL_ERROR)

        system = node(SYSTEM_PROMPT, name="system_prompt", trainable=True)
        previous = node("", name="start")
        for i in range(n):
            previous = chat(system, f"Customer message {i}: where is my order, and can I get a refund?", previous)
        try:
            refund(previous)
            raise AssertionError("the refund tool should have raised")
        except ExecutionError as error:
            out = error.exception_node
        params = [system]
        feedback = Feedback(
            0.0,
            "The refund tool was called without a valid order number; the agent must ask for the order number first.",
        )
    else:
        raise ValueError(f"unknown shape {shape!r}")
    t1 = time.perf_counter()
    out.backward(feedback.render())
    t2 = time.perf_counter()
    optimizer = OptoPrime(params, llm=_NoLLM())
    summary = optimizer.summarize()
    _, user_prompt = optimizer.construct_prompt(summary)
    t3 = time.perf_counter()
    if memory:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"peak_bytes": peak}
    return {
        "build_s": t1 - t0,
        "backward_s": t2 - t1,
        "prompt_s": t3 - t2,
        "chars": len(user_prompt),
        "tokens": count_tokens(user_prompt),
    }


def run_traceopt(shape: str, n: int, memory: bool, limit: float) -> dict[str, Any]:
    """One trace-opt case in a fresh process, killed after ``limit`` seconds."""
    command = [sys.executable, str(Path(__file__).resolve()), "--traceopt-case", shape, str(n)]
    if memory:
        command.append("--memory")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"skipped (too slow: > {limit:.0f} s)"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"failed: {tail[:120]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def traceopt_batch(cases: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Several small cases in one process (``--quick``: trace-opt's import alone takes seconds).

    Each case is timed, then measured again under tracemalloc; trace-opt's global node registry
    is cleared between passes so that one case's nodes do not weigh on the next."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from opto.trace.nodes import GRAPH

    out = []
    for shape, n in cases:
        GRAPH.clear()
        gc.collect()
        timed = traceopt_case(shape, n, memory=False)
        GRAPH.clear()
        gc.collect()
        out.append({"shape": shape, "n": n, **timed, **traceopt_case(shape, n, memory=True)})
    GRAPH.clear()
    return out


def run_traceopt_batch(cases: list[tuple[str, int]], limit: float) -> dict[tuple[str, int], dict[str, Any]]:
    """`traceopt_batch` in one subprocess, killed after ``limit`` seconds per case."""
    spec = ",".join(f"{shape}:{n}" for shape, n in cases)
    command = [sys.executable, str(Path(__file__).resolve()), "--traceopt-batch", spec]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit * len(cases), env=env)
    except subprocess.TimeoutExpired:
        return {case: {"skipped": f"skipped (too slow: > {limit * len(cases):.0f} s for the batch)"} for case in cases}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {case: {"skipped": f"failed: {tail[:120]}"} for case in cases}
    results = [json.loads(line) for line in done.stdout.strip().splitlines() if line.startswith("{")]
    return {(r.pop("shape"), r.pop("n")): r for r in results}


# ----- the whole run ------------------------------------------------------------------------------------
def import_times(with_traceopt: bool) -> list[dict[str, Any]]:
    rows = []
    for label, code, repeats in (
        ("python -c pass (interpreter start)", "pass", 5),
        ('python -c "import opto_core"', "import opto_core", 5),
    ):
        seconds = best_of(repeats, lambda code=code: subprocess.run([sys.executable, "-c", code], check=True))
        rows.append({"table": "import", "command": label, "best_of": repeats, "seconds": seconds})
    if with_traceopt:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        seconds = best_of(
            3,
            lambda: subprocess.run(
                [sys.executable, "-c", "import opto.trace, opto.optimizers"], check=True, env=env, capture_output=True
            ),
        )
        rows.append(
            {
                "table": "import",
                "command": 'python -c "import opto.trace, opto.optimizers" (trace-opt)',
                "best_of": 3,
                "seconds": seconds,
            }
        )
    return rows


def sizes_for(shape: str, quick: bool, sizes: list[int] | None) -> list[int]:
    if sizes:
        return sizes
    if quick:
        return list(QUICK_SIZES)
    return list(SIZES) + ([CHAIN_EXTRA] if shape == "add-chain" else [])


def growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Growth exponent k in cost ~ N^k, from N = 1,000 (or the smallest) to the largest N.

    Times are CPU times (robust to other load on a shared machine)."""
    out = []
    for shape in SHAPES:
        points = sorted((r["n"], r) for r in rows if r["shape"] == shape)
        points = [p for p in points if p[0] >= 1000] or points
        if len(points) < 2:
            continue
        (n1, a), (n2, b) = points[0], points[-1]
        row: dict[str, Any] = {"table": "growth", "shape": shape, "from_n": n1, "to_n": n2}
        for key in ("build_cpu_s", "backward_render_cpu_s", "peak_bytes", "tokens"):
            if a.get(key) and b.get(key):
                row[f"exponent_{key}"] = math.log(b[key] / a[key]) / math.log(n2 / n1)
        row["linear"] = all(
            row.get(f"exponent_{k}", 0) <= 1.2 for k in ("build_cpu_s", "backward_render_cpu_s", "peak_bytes")
        )
        out.append(row)
    return out


def targets(
    rows: list[dict[str, Any]], imports: list[dict[str, Any]], grow: list[dict[str, Any]], budget: int
) -> list[dict[str, Any]]:
    def find(shape: str, n: int) -> dict[str, Any] | None:
        return next((r for r in rows if r["shape"] == shape and r["n"] == n), None)

    result = []
    chain = find("add-chain", 5000)
    if chain:
        result.append(
            {
                "target": "add-chain N=5,000: backward + render <= 0.1 s",
                "measured": f"{fmt_s(chain['backward_render_s'])} (CPU {fmt_s(chain['backward_render_cpu_s'])})",
                "met": chain["backward_render_s"] <= 0.1,
            }
        )
    fan = find("fan-in", 1000)
    if fan:
        result.append(
            {
                "target": "fan-in of 1,000 parameters: backward + render <= 0.2 s",
                "measured": f"{fmt_s(fan['backward_render_s'])} (CPU {fmt_s(fan['backward_render_cpu_s'])})",
                "met": fan["backward_render_s"] <= 0.2,
            }
        )
    over = [f"{r['shape']} N={r['n']:,} ({r['tokens']:,} tokens)" for r in rows if not r["within_budget"]]
    result.append(
        {
            "target": f"every rendered prompt <= its budget ({budget:,} tokens)",
            "measured": "all within" if not over else "over: " + "; ".join(over),
            "met": not over,
        }
    )
    incomplete = [
        f"{r['shape']} N={r['n']:,}"
        for r in rows
        if not (r["all_variables"] and r["has_feedback"] and r["has_exception"] is not False)
    ]
    result.append(
        {
            "target": "every prompt keeps every variable, the feedback and the exception",
            "measured": "all kept" if not incomplete else "missing in: " + "; ".join(incomplete),
            "met": not incomplete,
        }
    )
    core_import = next(r for r in imports if "opto_core" in r["command"])
    result.append(
        {
            "target": 'python -c "import opto_core" <= 0.3 s',
            "measured": fmt_s(core_import["seconds"]),
            "met": core_import["seconds"] <= 0.3,
        }
    )
    nonlinear = [
        f"{g['shape']} (k={max(g.get('exponent_build_cpu_s', 0), g.get('exponent_backward_render_cpu_s', 0)):.2f})"
        for g in grow
        if not g["linear"]
    ]
    result.append(
        {
            "target": "linear growth (CPU time and memory exponent k <= 1.2 from N=1,000 up)",
            "measured": "linear" if not nonlinear else "not linear: " + "; ".join(nonlinear),
            "met": not nonlinear,
        }
    )
    for row in result:
        row["table"] = "targets"
    return result


CORE_COLUMNS = [
    ("shape", "shape", None),
    ("n", "N", fmt_num),
    ("nodes", "nodes", fmt_num),
    ("build_s", "build", fmt_s),
    ("backward_s", "backward", fmt_s),
    ("render_s", "render", fmt_s),
    ("backward_render_s", "backward+render", fmt_s),
    ("backward_render_cpu_s", "(CPU)", fmt_s),
    ("tokens", "tokens", fmt_num),
    ("within_budget", "<= budget", lambda v: "yes" if v else "NO"),
    ("complete", "vars/feedback/exc kept", None),
    ("code_lines_shown", "#Code lines shown", fmt_num),
    ("peak_bytes", "peak memory", fmt_mb),
]
COMPARE_COLUMNS = [
    ("shape", "shape", None),
    ("n", "N", fmt_num),
    ("backward_render_s", "opto_core backward+render", fmt_s),
    ("to_build_s", "trace-opt build", fmt_s),
    ("to_backward_s", "trace-opt backward", fmt_s),
    ("to_prompt_s", "trace-opt summarize+prompt", fmt_s),
    ("to_tokens", "trace-opt tokens", fmt_num),
    ("to_peak_bytes", "trace-opt peak", fmt_mb),
    ("ratio", "ratio (trace-opt / opto_core)", None),
]


def _complete(row: dict[str, Any]) -> str:
    missing = row["missing_variables"]
    parts = [
        f"vars {'yes' if row['all_variables'] else f'NO ({missing} missing)'}",
        f"fb {'yes' if row['has_feedback'] else 'NO'}",
    ]
    if row["has_exception"] is not None:
        parts.append(f"exc {'yes' if row['has_exception'] else 'NO'}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="comma-separated N values for every shape (overrides the defaults)",
    )
    parser.add_argument(
        "--shapes",
        type=lambda s: s.split(","),
        default=list(SHAPES),
        help=f"comma-separated shapes, of {', '.join(SHAPES)}",
    )
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="render budget in tokens")
    parser.add_argument("--no-trace-opt", action="store_true", help="do not run the trace-opt comparison")
    parser.add_argument(
        "--trace-opt-limit",
        type=float,
        default=TRACE_OPT_LIMIT_S,
        help="seconds allowed per trace-opt case (killed beyond it)",
    )
    parser.add_argument(
        "--trace-opt-max-n",
        type=int,
        default=None,
        help="largest N run with trace-opt (default: no limit; 100 with --quick)",
    )
    parser.add_argument("--no-import", action="store_true", help="skip the import-time measurement")
    parser.add_argument("--profile", nargs=2, metavar=("SHAPE", "N"), help="print a cProfile of one opto_core case")
    parser.add_argument("--traceopt-case", nargs=2, metavar=("SHAPE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--traceopt-batch", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.traceopt_case:  # inside the subprocess
        shape, n = args.traceopt_case
        print(json.dumps(traceopt_case(shape, int(n), args.memory)))
        return []
    if args.traceopt_batch:  # inside the subprocess
        cases = [(item.split(":")[0], int(item.split(":")[1])) for item in args.traceopt_batch.split(",")]
        for result in traceopt_batch(cases):
            print(json.dumps(result), flush=True)
        return []
    if args.profile:
        print(profile_core(args.profile[0], int(args.profile[1]), args.budget))
        return []
    unknown = set(args.shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPES)}")

    with_traceopt = not args.no_trace_opt and traceopt_installed()
    traceopt_max_n = args.trace_opt_max_n if args.trace_opt_max_n is not None else (100 if args.quick else None)
    info = {
        "table": "machine",
        **machine(),
        "budget_tokens": args.budget,
        "token_counter": "tiktoken cl100k_base" if _encoder() is not None else "estimate: ceil(chars / 3.5)",
        "trace_opt": traceopt_version()
        if with_traceopt
        else ("not run (--no-trace-opt)" if traceopt_installed() else "not installed"),
    }
    batched: dict[tuple[str, int], dict[str, Any]] = {}
    if with_traceopt and args.quick:  # small cases only: one process, one import
        cases = [
            (shape, n)
            for shape in args.shapes
            for n in sizes_for(shape, args.quick, args.sizes)
            if traceopt_max_n is None or n <= traceopt_max_n
        ]
        if cases:
            progress(f"trace-opt: {len(cases)} small cases in one process ...")
            batched = run_traceopt_batch(cases, args.trace_opt_limit)
    rows: list[dict[str, Any]] = []
    for shape in args.shapes:
        history: list[tuple[int, float, float]] = []  # trace-opt's (N, total s, backward+prompt s)
        stopped = ""
        for n in sizes_for(shape, args.quick, args.sizes):
            progress(f"opto_core {shape} N={n:,} ...")
            row: dict[str, Any] = {
                "table": "core_scaling",
                "shape": shape,
                "n": n,
                "budget": args.budget,
                **measure_core(shape, n, args.budget),
            }
            row["complete"] = _complete(row)
            if with_traceopt:
                row.update(
                    _compare(shape, n, history, stopped, traceopt_max_n, args.trace_opt_limit, batched.get((shape, n)))
                )
                _ratio(row)
                if "to_skipped" in row:
                    stopped = stopped or row["to_skipped"]
                else:
                    history.append(
                        (
                            n,
                            row["to_build_s"] + row["to_backward_s"] + row["to_prompt_s"],
                            row["to_backward_s"] + row["to_prompt_s"],
                        )
                    )
            rows.append(row)
    imports = [] if args.no_import else import_times(with_traceopt and not args.quick)
    grow = growth(rows)
    goals = targets(rows, imports, grow, args.budget) if imports else []

    if args.json:
        emit_json([info, *rows, *imports, *grow, *goals])
        return rows
    print(
        f"Machine: {info['cpu']}, {info['cpus']} CPUs, Python {info['python']}, {info['date']}, "
        f"load average at start {info['load_average']}"
    )
    print(
        f"Render budget {args.budget:,} tokens; tokens counted with {info['token_counter']}; "
        f"trace-opt: {info['trace_opt']}\n"
    )
    print("### opto_core\n")
    print(table(rows, CORE_COLUMNS))
    if with_traceopt:
        print("\n### trace-opt, same shapes\n")
        print(table(rows, COMPARE_COLUMNS))
    if imports:
        print("\n### Import time\n")
        print(
            table(
                imports, [("command", "command", None), ("best_of", "best of", None), ("seconds", "wall time", fmt_s)]
            )
        )
    if grow:
        print("\n### Growth exponent k (cost ~ N^k; times are CPU times)\n")
        print(
            table(
                grow,
                [
                    ("shape", "shape", None),
                    ("from_n", "from N", fmt_num),
                    ("to_n", "to N", fmt_num),
                    ("exponent_build_cpu_s", "build", lambda v: f"{v:.2f}"),
                    ("exponent_backward_render_cpu_s", "backward+render", lambda v: f"{v:.2f}"),
                    ("exponent_peak_bytes", "peak memory", lambda v: f"{v:.2f}"),
                    ("exponent_tokens", "tokens", lambda v: f"{v:.2f}"),
                ],
            )
        )
    if goals:
        print("\n### Targets\n")
        print(
            table(
                goals,
                [
                    ("target", "target", None),
                    ("measured", "measured", None),
                    ("met", "met", lambda v: "yes" if v else "NO"),
                ],
            )
        )
    return rows


def _compare(
    shape: str,
    n: int,
    history: list[tuple[int, float, float]],
    stopped: str,
    max_n: int | None,
    limit: float,
    measured: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """trace-opt's figures for one case, or why it was skipped.

    A case is skipped without running when its time, extrapolated from the previous N as
    ``total * (N / N_prev) ** k``, exceeds ``limit``; k is the growth exponent of backward +
    prompt over the last two sizes, at least 2 (trace-opt's backward is quadratic).
    """
    if measured is not None:  # measured already, in a batch
        if "skipped" in measured:
            return {"to_skipped": measured["skipped"], "ratio": measured["skipped"]}
        return {f"to_{key}": value for key, value in measured.items()}
    if stopped:
        return {"to_skipped": stopped, "ratio": stopped}
    if max_n is not None and n > max_n:
        reason = f"skipped (N > {max_n:,} in this mode)"
        return {"to_skipped": reason, "ratio": reason}
    if history:
        last_n, last_total, last_core = history[-1]
        k = 2.0
        if len(history) >= 2 and history[-2][2] > 0 and last_core > 0:
            k = max(k, math.log(last_core / history[-2][2]) / math.log(last_n / history[-2][0]))
        predicted = last_total * (n / last_n) ** k
        if predicted > limit:
            reason = f"skipped (too slow: ~{predicted:,.0f} s extrapolated from N={last_n:,} with N^{k:.1f})"
            return {"to_skipped": reason, "ratio": reason}
    progress(f"trace-opt {shape} N={n:,} ...")
    timed = run_traceopt(shape, n, memory=False, limit=limit)
    if "skipped" in timed:
        return {"to_skipped": timed["skipped"], "ratio": timed["skipped"]}
    out = {f"to_{key}": value for key, value in timed.items()}
    total = timed["build_s"] + timed["backward_s"] + timed["prompt_s"]
    if total * 3 < limit:  # tracemalloc slows trace-opt about 2-3x
        memory = run_traceopt(shape, n, memory=True, limit=limit)
        out["to_peak_bytes"] = memory.get("peak_bytes")
    return out


def _ratio(row: dict[str, Any]) -> None:
    if "to_backward_s" in row:
        core = row["backward_render_s"]
        theirs = row["to_backward_s"] + row["to_prompt_s"]
        row["ratio_value"] = theirs / core if core else None
        row["ratio"] = f"{row['ratio_value']:,.0f}x" if row["ratio_value"] else "-"


if __name__ == "__main__":
    main()
