"""The optimization loop's own overhead, against an LLM of fixed latency.

A scripted OpenAI-compatible server (``http.server`` in a thread of this process, on loopback)
answers ``POST /v1/chat/completions`` after a set delay (default 50 ms). The workflow being
optimized is a plain-Python `FunctionTarget` whose one traced op asks that server one question
per example (through ``opto_core.llm.client.OpenAIChat``, i.e. the ``openai`` package over real HTTP);
the optimizer is `OptoPrime` whose LLM is the same server, answering a valid JSON proposal that
changes the workflow's instruction every step (so every step applies a change and re-evaluates).

For ``num_threads`` = 1, 4, 16 the script runs `opto_core.engine.loop.optimize` and prints the wall time
per step and the evaluation throughput: examples evaluated per second *inside the loop's
evaluation calls* (timed by wrapping ``opto_core.engine.executors.ThreadExecutor.evaluate`` at run time; the library file is
not changed), compared with the ideal ``num_threads x (1 / latency)``. Target: at least 80 % of it.
The end-to-end rate (all examples over the whole run, including the optimizer's own calls,
backward and render) is printed too.

    python bench/loop_overhead.py            # 3 steps, batch 32, threads 1, 4, 16
    python bench/loop_overhead.py --quick    # 2 steps, batch 16
    python bench/loop_overhead.py --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit_json, fmt_num, fmt_s, machine, make_parser, progress, table
from opto_core import Parameter
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime

WORKER_MODEL = "bench-worker"
OPTIMIZER_MODEL = "bench-optimizer"
THREADS = (1, 4, 16)
TARGET_RATIO = 0.8


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: 16 clients connecting at once overflow it, and the
    # dropped SYNs are retried after 1 s, a stall that belongs to this test server, not the loop.
    request_queue_size = 128
    daemon_threads = True


# ----- the scripted server ---------------------------------------------------------------------------
class ScriptedServer:
    """An OpenAI-compatible chat server on loopback that answers after ``latency`` seconds.

    Requests for ``OPTIMIZER_MODEL`` get a JSON proposal that rewrites the parameter
    ``instructions`` (a new revision each time); any other model gets a short answer.
    """

    def __init__(self, latency: float, parameter: str = "instructions") -> None:
        self.latency = latency
        self.parameter = parameter
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def stats(self) -> dict[str, int]:
        """Requests answered so far, per model."""
        with self._lock:
            return dict(self.counts)

    def reply(self, request: dict[str, Any]) -> str:
        model = request.get("model", "")
        with self._lock:
            count = self.counts[model] = self.counts.get(model, 0) + 1
        if model == OPTIMIZER_MODEL:
            return json.dumps(
                {
                    "reasoning": "The answers are fine; try a more specific instruction.",
                    "suggestion": {self.parameter: f"Answer in one short sentence (revision {count})."},
                }
            )
        question = next((m["content"] for m in reversed(request.get("messages", [])) if m.get("role") == "user"), "")
        return f"Answer: {question[:60]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints
            # Headers and body go out as separate writes; with Nagle's algorithm on, the body waits
            # for the client's delayed ACK (~40 ms on Linux), which would be charged to the loop.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                request = json.loads(body or b"{}")
                time.sleep(server.latency)
                text = server.reply(request)
                prompt = sum(len(str(m.get("content", ""))) for m in request.get("messages", [])) // 4
                self._send(
                    200,
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": request.get("model", ""),
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": len(text) // 4,
                            "total_tokens": prompt + len(text) // 4,
                        },
                    },
                )

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/bench/stats"):
                    self._send(200, server.stats())
                    return
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": WORKER_MODEL, "object": "model"}, {"id": OPTIMIZER_MODEL, "object": "model"}],
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
                pass

        return Handler


class ServerProcess:
    """The same server in a child process, so that its request handling does not compete with the
    loop for this process's GIL (``--server-process``): isolates the loop's own overhead."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> ServerProcess:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(self.latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            self.__exit__()
            raise RuntimeError("the scripted server process did not start")
        return self

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.base_url}/bench/stats", timeout=5) as response:
            return json.loads(response.read())

    def __exit__(self, *exc: Any) -> None:
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()  # the child exits when its stdin closes
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def serve(latency: float) -> None:
    """Child-process mode: serve until stdin closes."""
    with ScriptedServer(latency) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


# ----- the LLM client -----------------------------------------------------------------------------------
def chat_client(base_url: str, model: str) -> Any:
    """``opto_core.llm.client.OpenAIChat`` (retries off: a failure should show, not hide in a retry)."""
    from opto_core.llm.client import OpenAIChat

    return OpenAIChat(base_url=base_url, api_key="bench-no-key", model=model, max_retries=0, timeout=30)


def make_target(base_url: str) -> tuple[FunctionTarget, Parameter]:
    """A one-op workflow: the instruction (trainable) and the question go to the worker model."""
    instructions = Parameter(
        "instructions", "text", "Answer the question.", description="the instruction sent with every question"
    )
    llm = chat_client(base_url, WORKER_MODEL)

    @op
    def ask(instruction: str, question: str) -> str:
        """Send the instruction and the question to the chat model; return its answer."""
        return llm.chat([{"role": "system", "content": instruction}, {"role": "user", "content": question}]).text

    def workflow(question: str) -> str:
        return ask(instructions, question)

    return FunctionTarget(workflow, [instructions], input_keys=["question"]), instructions


def feedback(example: dict[str, Any], output: str) -> tuple[float, str]:
    ok = output.startswith("Answer:")
    return (1.0 if ok else 0.0), ("a well-formed answer" if ok else f"unexpected output {output[:80]!r}")


# ----- one measurement ----------------------------------------------------------------------------------
def measure(num_threads: int, latency: float, steps: int, batch: int, server_process: bool = False) -> dict[str, Any]:
    """One `optimize` run against a fresh server; evaluation calls are timed from outside."""
    import opto_core.engine.executors as executors_module
    import opto_core.engine.loop as loop_module

    original = executors_module.ThreadExecutor.evaluate
    evaluations: list[tuple[int, float]] = []

    def timed_evaluate(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        evaluations.append((len(result), time.perf_counter() - start))
        return result

    with ServerProcess(latency) if server_process else ScriptedServer(latency) as server:
        target, _ = make_target(server.base_url)
        optimizer = OptoPrime(target.parameters(), chat_client(server.base_url, OPTIMIZER_MODEL), memory_size=2)
        trainset = [{"question": f"What is the status of order {1000 + i}?"} for i in range(batch)]
        executors_module.ThreadExecutor.evaluate = timed_evaluate  # type: ignore[method-assign]
        try:
            start = time.perf_counter()
            result = loop_module.optimize(
                target,
                trainset,
                feedback,
                optimizer,
                max_steps=steps,
                batch_size=batch,
                num_threads=num_threads,
                seed=0,
            )
            wall = time.perf_counter() - start
        finally:
            executors_module.ThreadExecutor.evaluate = original  # type: ignore[method-assign]
        counts = server.stats()
        raw = raw_client_rate(server.base_url, num_threads, batch, rounds=len(evaluations))
    step_records = [r for r in result.history if r.get("kind") == "step"]
    examples = sum(n for n, _ in evaluations)
    eval_seconds = sum(s for _, s in evaluations)
    throughput = examples / eval_seconds if eval_seconds else None
    warm = evaluations[1:]  # the first call also opens the connections and starts the server's threads
    steady = sum(n for n, _ in warm) / sum(s for _, s in warm) if warm else None
    ideal = min(num_threads, batch) / latency
    accepted = sum(1 for r in step_records if r.get("proposal", {}).get("accepted"))
    return {
        "table": "loop_overhead",
        "server": "child process" if server_process else "thread",
        "num_threads": num_threads,
        "latency_s": latency,
        "steps": len(step_records),
        "batch_size": batch,
        "wall_s": wall,
        "step_s": sum(r["seconds"] for r in step_records) / len(step_records) if step_records else None,
        "ideal_step_s": (2 * -(-batch // num_threads) + 1) * latency,
        "examples": examples,
        "eval_s": eval_seconds,
        "examples_per_s": throughput,
        "ideal_per_s": ideal,
        "ratio": throughput / ideal if throughput else None,
        "steady_per_s": steady,
        "steady_ratio": steady / ideal if steady else None,
        "raw_client_per_s": raw,
        "raw_ratio": raw / ideal if raw else None,
        "loop_vs_raw": throughput / raw if throughput and raw else None,
        "end_to_end_per_s": examples / wall if wall else None,
        "worker_calls": counts.get(WORKER_MODEL, 0),
        "optimizer_calls": counts.get(OPTIMIZER_MODEL, 0),
        "proposals_accepted": accepted,
        "stopped": result.stopped_reason,
        "met": bool(throughput and throughput / ideal >= TARGET_RATIO),
    }


def _pct(value: float) -> str:
    return f"{value:.0%}"


COLUMNS = [
    ("latency_s", "latency", fmt_s),
    ("server", "server", None),
    ("num_threads", "threads", None),
    ("steps", "steps", None),
    ("batch_size", "batch", None),
    ("step_s", "wall time / step", fmt_s),
    ("ideal_step_s", "ideal / step", fmt_s),
    ("examples", "examples", fmt_num),
    ("examples_per_s", "examples/s in evaluation", fmt_num),
    ("ideal_per_s", "ideal (threads / latency)", fmt_num),
    ("ratio", "ratio", _pct),
    ("met", ">= 80 %", lambda v: "yes" if v else "NO"),
    ("steady_ratio", "ratio after 1st call", _pct),
    ("raw_client_per_s", "bare client examples/s", fmt_num),
    ("raw_ratio", "bare client ratio", _pct),
    ("loop_vs_raw", "loop / bare client", _pct),
    ("end_to_end_per_s", "examples/s end to end", fmt_num),
    ("worker_calls", "worker calls", fmt_num),
    ("optimizer_calls", "optimizer calls", fmt_num),
]


def raw_client_rate(base_url: str, num_threads: int, batch: int, rounds: int) -> float:
    """The ceiling without the loop: the same calls with a fresh `OpenAIChat` and a thread pool
    per round (as `evaluate` does), no tracing, no feedback."""
    from concurrent.futures import ThreadPoolExecutor

    llm = chat_client(base_url, WORKER_MODEL)
    messages = [{"role": "system", "content": "Answer the question."}]

    def one(i: int) -> str:
        return llm.chat(messages + [{"role": "user", "content": f"What is the status of order {1000 + i}?"}]).text

    start = time.perf_counter()
    for _ in range(rounds):
        with ThreadPoolExecutor(max_workers=min(num_threads, batch)) as pool:
            list(pool.map(one, range(batch)))
    return rounds * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--latency",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.05],
        help="comma-separated server delays per request, seconds (default 0.05)",
    )
    parser.add_argument(
        "--server-process", action="store_true", help="run the scripted server in a child process instead of a thread"
    )
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(THREADS),
        help="comma-separated num_threads values",
    )
    parser.add_argument("--steps", type=int, default=None, help="optimization steps per run (default 3; 2 quick)")
    parser.add_argument("--batch", type=int, default=None, help="batch size = trainset size (default 32; 16 quick)")
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return []
    steps = args.steps if args.steps is not None else (2 if args.quick else 3)
    batch = args.batch if args.batch is not None else (16 if args.quick else 32)
    rows = []
    for latency in args.latency:
        for threads in args.threads:
            progress(f"loop_overhead latency={latency * 1000:.0f} ms num_threads={threads} ...")
            rows.append(measure(threads, latency, steps, batch, args.server_process))
    if args.json:
        emit_json([{"table": "machine", **machine()}, *rows])
        return rows
    info = machine()
    print(
        f"Machine: {info['cpu']}, {info['cpus']} CPUs, Python {info['python']}, {info['date']}, "
        f"load average at start {info['load_average']}"
    )
    print(
        f"Scripted server latency {', '.join(f'{x * 1000:.0f} ms' for x in args.latency)} "
        f"(server in a {'child process' if args.server_process else 'thread of this process'}); "
        f"{steps} steps of batch {batch} (each step evaluates the batch, asks the optimizer once, applies, "
        f"re-evaluates the batch)\n"
    )
    print(table(rows, COLUMNS))
    return rows


if __name__ == "__main__":
    main()
