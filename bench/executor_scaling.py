"""How the three executors scale with concurrency on a workflow that waits on the network.

Every run of the workflow asks a loopback HTTP server (a separate process on 127.0.0.1, asyncio,
answering each request after a fixed latency, default 200 ms) one question and records the answer
in a traced op, so a run costs ~200 ms of waiting and almost no CPU: the case where concurrency
pays. For ``threads``, ``asyncio`` and ``ray`` (one local Ray instance with 2 CPUs) and concurrency
1 to 256, the script evaluates ``rounds x concurrency`` examples through the executor (as the loop
does: `Executor.evaluate`, feedback on the driver) and prints:

- throughput as a fraction of the ideal (``ceil(n / concurrency) x latency`` seconds);
- the time each executor adds per evaluation at concurrency 1: wall time per example minus the
  run's own time measured where it ran (for Ray: shipping the example and the values, scheduling,
  returning output and graph, scoring on the driver);
- peak memory (RSS of this process, plus the Ray workers' for ``ray``), sampled every 50 ms;
- failed runs, and whether every example that succeeded under several executors gave identical
  outputs and scores under all of them.

The sync workflow (``run``) uses one shared ``httpx.Client``; the async one (``arun``) one shared
``aiohttp.ClientSession`` per event loop (httpx's async client cost ~9 ms of CPU per request at
concurrency 64 here, which would measure the HTTP client, not the executor); both allow 512
connections. Targets: asyncio >= 90 % of the
ideal at 256, Ray's added time <= 5 ms per evaluation locally.

    python -m bench.executor_scaling                  # concurrency 1, 4, 16, 64, 256; 10 rounds
    python -m bench.executor_scaling --quick          # 1, 16, 256; 3 rounds
    python -m bench.executor_scaling --json
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import sys
import threading
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `opto_core` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit_json, fmt_num, machine, make_parser, progress, table
from opto_core import Feedback, Parameter
from opto_core.engine.executors import AsyncioExecutor, ThreadExecutor
from opto_core.kernel.trace import capture, op

MAX_REQUESTS = 500_000  # the server stops answering after this many: a runaway client cannot load it forever


# ----- the loopback server (its own process) ---------------------------------------------------------------
def _serve(port_out: Any, latency: float) -> None:
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while served < MAX_REQUESTS:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                served += 1
                await asyncio.sleep(latency)
                body = f"answer to {path}".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_out.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_server(latency: float) -> tuple[multiprocessing.Process, str]:
    queue: Any = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(queue, latency), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{queue.get(timeout=30)}"


# ----- the workflow ---------------------------------------------------------------------------------------------
@op
def answer(word, reply):
    """Prefix the server's reply with the word."""
    return f"{word}: {reply}"


class LatencyTarget:
    """A plain-Python target whose every run waits on the loopback server (sync ``run``, async ``arun``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.word = Parameter("word", "text", "hello")
        self._sync: Any = None
        self._async: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # clients and locks are per process: Ray workers make their own
        return {"url": self.url, "word": self.word}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"])
        self.word = state["word"]

    def parameters(self) -> list[Parameter]:
        return [self.word]

    def apply(self, updates: dict[str, Any]) -> None:
        self.word.value = updates["word"]

    def snapshot(self) -> Any:
        return self.word.value

    def restore(self, snapshot: Any) -> None:
        self.word.value = snapshot

    def _graph(self, example: dict[str, Any], reply: str) -> tuple[Any, Any]:
        with capture() as run:
            out = answer(self.word, run.input("reply", reply))
            run.mark_output(out)
        return str(out), run.graph

    def run(self, example: dict[str, Any]) -> tuple[Any, Any]:
        import httpx

        with self._lock:
            if self._sync is None:
                self._sync = httpx.Client(
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=512), timeout=30
                )
        reply = self._sync.get(f"{self.url}/q{example['i']}").text
        return self._graph(example, reply)

    async def arun(self, example: dict[str, Any]) -> tuple[Any, Any]:
        import aiohttp

        loop = id(asyncio.get_running_loop())
        session = self._async.get(loop)
        if session is None:
            session = self._async[loop] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=30)
            )
        async with session.get(f"{self.url}/q{example['i']}") as response:
            reply = await response.text()
        return self._graph(example, reply)

    async def aclose(self) -> None:
        """Close this loop's HTTP session (before its executor's loop stops)."""
        session = self._async.pop(id(asyncio.get_running_loop()), None)
        if session is not None:
            await session.close()


def feedback(example: dict[str, Any], output: str) -> Feedback:
    return Feedback(float(output.endswith(f"/q{example['i']}")), output)


# ----- measuring ------------------------------------------------------------------------------------------------
def _rss(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the RSS of this process (and of extra pids) every 50 ms; ``peak`` is the largest sum."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or []
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss() + sum(_rss(p) for p in self.pids))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss() + sum(_rss(p) for p in self.pids))


def measure(
    executor: Any, target: LatencyTarget, concurrency: int, rounds: int, latency: float, pids: list[int] | None = None
) -> dict[str, Any]:
    examples = [{"i": i} for i in range(concurrency * rounds)]
    with PeakMemory(pids) as memory:
        started, cpu = time.perf_counter(), time.process_time()
        results = executor.evaluate(
            target, examples, feedback, indices=list(range(len(examples))), failure_score=0.0, values={"word": "hello"}
        )
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    ideal = math.ceil(len(examples) / concurrency) * latency
    failed = [r for r in results if r.failed]
    if failed:
        progress(f"  {len(failed)} failed runs, e.g. {failed[0].output!r}")
    return {
        "examples": len(examples),
        "wall_s": wall,
        "ideal_s": ideal,
        "fraction": ideal / wall,
        "per_eval_ms": wall / len(examples) * 1000,
        "cpu_ms_per_eval": cpu / len(examples) * 1000,
        "peak_mb": memory.peak / 2**20,
        # time per example beyond the run itself (shipping, scheduling, scoring): meaningful at concurrency 1
        "added_ms": (wall - sum(r.seconds for r in results)) / len(examples) * 1000,
        "failed": len(failed),
        "results": [None if r.failed else (r.output, r.feedback.score) for r in results],
    }


def main() -> None:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server latency in seconds (default 0.2)")
    parser.add_argument("--rounds", type=int, default=None, help="examples per run = rounds x concurrency")
    parser.add_argument("--concurrency", type=int, nargs="*", default=None)
    parser.add_argument("--executors", nargs="*", default=["threads", "asyncio", "ray"])
    args = parser.parse_args()
    levels = args.concurrency or ([1, 16, 256] if args.quick else [1, 4, 16, 64, 256])
    rounds = args.rounds or (3 if args.quick else 10)
    server, url = start_server(args.latency)
    rows: list[dict[str, Any]] = []
    outputs: dict[tuple[str, int], Any] = {}
    try:
        ray = None
        if "ray" in args.executors:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, throwaway instance
            import cloudpickle
            import ray

            cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import bench/
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        for name in args.executors:
            for concurrency in levels:
                target = LatencyTarget(url)
                pids: list[int] = []
                if name == "threads":
                    executor: Any = ThreadExecutor(concurrency)
                elif name == "asyncio":
                    executor = AsyncioExecutor(concurrency)
                else:
                    from opto_core.engine.executors.ray_cluster import RayExecutor

                    executor = RayExecutor(concurrency)
                # warm up: workers started, workflow built, one connection per concurrent run open
                executor.evaluate(
                    target,
                    [{"i": -1 - i} for i in range(concurrency)],
                    feedback,
                    indices=list(range(concurrency)),
                    failure_score=0.0,
                )
                if name == "ray":
                    pids = executor.worker_pids()
                progress(f"{name} x {concurrency} ...")
                row = measure(executor, target, concurrency, rounds, args.latency, pids)
                if name == "asyncio":
                    asyncio.run_coroutine_threadsafe(target.aclose(), executor.loop).result(timeout=30)
                executor.close()
                outputs[(name, concurrency)] = row.pop("results")
                rows.append({"executor": name, "concurrency": concurrency, **row})
                progress(f"  {row['fraction'] * 100:.1f}% of ideal, {row['per_eval_ms']:.1f} ms/eval wall")
        if ray is not None:
            ray.shutdown()
    finally:
        server.terminate()
    # identical: every example that succeeded under two executors gave the same output and score under both
    identical = all(
        a == b
        for c in levels
        for name in args.executors
        for a, b in zip(outputs[(name, c)], outputs[(args.executors[0], c)])
        if a is not None and b is not None
    )
    added = {r["executor"]: r["added_ms"] for r in rows if r["concurrency"] == 1}
    summary = {
        "latency_s": args.latency,
        "rounds": rounds,
        "identical_results": identical,
        "added_ms_per_eval": added,
        **machine(),
    }
    if args.json:
        emit_json([*rows, {"summary": summary}])
        return
    print(
        table(
            rows,
            [
                ("executor", "executor", None),
                ("concurrency", "concurrency", None),
                ("examples", "examples", None),
                ("wall_s", "wall s", lambda v: f"{v:.2f}"),
                ("ideal_s", "ideal s", lambda v: f"{v:.2f}"),
                ("fraction", "of ideal", lambda v: f"{v * 100:.1f}%"),
                ("cpu_ms_per_eval", "driver CPU ms/eval", lambda v: f"{v:.2f}"),
                ("peak_mb", "peak RSS MB", lambda v: fmt_num(v, 0)),
                ("failed", "failed", None),
            ],
        )
    )
    print()
    print(f"identical results across executors: {identical}")
    if added:
        print(
            "time added per evaluation at concurrency 1 (wall time minus the run's own time, where it ran): "
            + ", ".join(f"{name} {ms:.2f} ms" for name, ms in added.items())
        )
    print(
        f"latency {args.latency * 1000:.0f} ms, {rounds} rounds; {summary['cpu']} ({summary['cpus']} CPUs), "
        f"Python {summary['python']}, {summary['date']}, load {summary['load_average']}"
    )


if __name__ == "__main__":
    main()
