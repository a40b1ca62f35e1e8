"""What `OptoCallbackHandler` costs per run of a LangChain chain, and whether it leaks.

The chain has five steps, all real LangChain objects, with a fake model so that only LangChain's
own work and the callbacks are timed:

    ChatPromptTemplate -> GenericFakeChatModel -> StrOutputParser -> RunnableLambda -> RunnableLambda

Each ``invoke`` is timed three ways, interleaved in many short rounds so that machine noise hits
all three alike, in CPU time of this process (other processes on a shared machine do not count): with no callback, with LangChain's own ``RunCollectorCallbackHandler`` (a `BaseTracer`
that keeps the run tree, the usual baseline for "tracing"), and with ``OptoCallbackHandler``
(the same tracer plus copying every value and building the OPTO graph when the run ends). The
figure that matters is the ratio of the two overheads over the bare chain:

    overhead ratio = (opto - none) / (run_collector - none)          target: <= 1.3

Memory: after a warm-up, N runs with one handler whose graphs are consumed as they come
(``pop_graphs``); the growth of traced Python memory (tracemalloc) between the first and the last
quarter says whether anything is kept per run. The handler's internal maps are also checked empty.

    python bench/langchain_overhead.py            # 4,000 timed runs per variant, 10,000 for memory
    python bench/langchain_overhead.py --quick    # 1,000 timed runs, 1,000 for memory (under a minute)
    python bench/langchain_overhead.py --json
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit_json, fmt_num, machine, make_parser, progress, table


def build_chain() -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda

    class Model(GenericFakeChatModel):
        """GenericFakeChatModel reads an iterator; this one answers forever."""

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            from langchain_core.outputs import ChatGeneration, ChatResult

            text = f"You asked: {messages[-1].content}. The answer is 42."
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a {role}. Answer briefly."), ("human", "{question}")]
    )
    return (
        prompt
        | Model(messages=iter([]))
        | StrOutputParser()
        | RunnableLambda(lambda s: s.strip())
        | RunnableLambda(lambda s: s.upper())
    )


def time_variants(chain: Any, runs: int, rounds: int) -> dict[str, float]:
    """Median seconds per invoke for each variant, over ``rounds`` interleaved rounds."""
    from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

    from opto_adapters.langchain import OptoCallbackHandler

    collector = RunCollectorCallbackHandler()
    opto = OptoCallbackHandler(max_graphs=1)
    configs: dict[str, Callable[[], dict[str, Any]]] = {
        "none": dict,
        "run_collector": lambda: {"callbacks": [collector]},
        "opto": lambda: {"callbacks": [opto]},
    }
    per_round: dict[str, list[float]] = {name: [] for name in configs}
    batch = max(1, runs // rounds)
    inputs = {"role": "helpful assistant", "question": "What is the meaning of life?"}
    for config in configs.values():  # warm-up: imports, caches
        for _ in range(20):
            chain.invoke(inputs, config=config())
    for index in range(rounds):
        for name, config in configs.items():
            gc.collect()
            start = time.process_time()
            for _ in range(batch):
                chain.invoke(inputs, config=config())
            per_round[name].append((time.process_time() - start) / batch)
            collector.traced_runs.clear()
            opto.pop_graphs()
        if (index + 1) % 5 == 0:
            progress(
                f"  round {index + 1}/{rounds}: " + ", ".join(f"{n} {v[-1] * 1e3:.3f} ms" for n, v in per_round.items())
            )
    assert not opto.errors, opto.errors
    return {name: statistics.median(values) for name, values in per_round.items()}


def memory_growth(chain: Any, runs: int) -> dict[str, Any]:
    """Traced memory after each quarter of ``runs`` invokes with one handler, graphs consumed."""
    from opto_adapters.langchain import OptoCallbackHandler

    handler = OptoCallbackHandler()
    inputs = {"role": "helpful assistant", "question": "What is the meaning of life?"}
    for _ in range(200):  # warm-up outside the measurement
        chain.invoke(inputs, config={"callbacks": [handler]})
    handler.pop_graphs()
    gc.collect()
    tracemalloc.start()
    quarters = []
    nodes = 0
    for quarter in range(4):
        for _ in range(runs // 4):
            chain.invoke(inputs, config={"callbacks": [handler]})
            for graph in handler.pop_graphs():
                nodes += len(graph)
        gc.collect()
        quarters.append(tracemalloc.get_traced_memory()[0])
        progress(f"  memory after {(quarter + 1) * runs // 4} runs: {quarters[-1] / 1e3:.1f} kB")
    tracemalloc.stop()
    leftovers = {
        "records": len(handler._records),
        "run_map": len(handler.run_map),
        "order_map": len(handler.order_map),
        "graphs": len(handler.graphs),
    }
    return {
        "runs": runs,
        "graph_nodes_seen": nodes,
        "kb_after_first_quarter": quarters[0] / 1e3,
        "kb_after_last_quarter": quarters[-1] / 1e3,
        "growth_bytes_per_run": (quarters[-1] - quarters[0]) / (runs * 3 / 4),
        "leftovers": leftovers,
    }


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="timed invokes per variant")
    parser.add_argument("--memory-runs", type=int, default=None, help="invokes for the memory check")
    args = parser.parse_args(argv)
    runs = args.runs or (1000 if args.quick else 4000)
    memory_runs = args.memory_runs or (1000 if args.quick else 10_000)
    rounds = 25 if args.quick else 80
    chain = build_chain()
    progress(f"timing {runs} invokes per variant in {rounds} interleaved rounds")
    times = time_variants(chain, runs, rounds)
    none, collector, opto = times["none"], times["run_collector"], times["opto"]
    ratio = (opto - none) / (collector - none) if collector > none else float("nan")
    progress(f"memory: {memory_runs} invokes, graphs consumed")
    memory = memory_growth(chain, memory_runs)
    rows = [
        {"variant": "no callback", "ms_per_invoke": none * 1e3, "overhead_ms": 0.0},
        {
            "variant": "RunCollectorCallbackHandler",
            "ms_per_invoke": collector * 1e3,
            "overhead_ms": (collector - none) * 1e3,
        },
        {
            "variant": "OptoCallbackHandler",
            "ms_per_invoke": opto * 1e3,
            "overhead_ms": (opto - none) * 1e3,
            "overhead_ratio_vs_run_collector": ratio,
            "target_ratio": 1.3,
            "within_target": ratio <= 1.3,
        },
    ]
    memory_row = {"variant": "OptoCallbackHandler memory", **memory}
    if args.json:
        emit_json([{**row, "machine": machine()} for row in rows + [memory_row]])
        return
    print(
        f"5-step chain, CPU time per invoke, median of {rounds} rounds of {runs // rounds} invokes "
        f"({machine()['cpu']}, Python {machine()['python']})\n"
    )
    print(
        table(
            rows,
            [
                ("variant", "variant", None),
                ("ms_per_invoke", "ms / invoke", lambda v: f"{v:.3f}"),
                ("overhead_ms", "overhead (ms)", lambda v: f"{v:.3f}"),
                ("overhead_ratio_vs_run_collector", "overhead / RunCollector's", lambda v: f"{v:.2f}x"),
            ],
        )
    )
    print(f"\nOverhead ratio {ratio:.2f}x (target <= 1.3x): {'met' if ratio <= 1.3 else 'NOT met'}")
    print(
        f"\nMemory over {memory['runs']:,} runs with graphs consumed: "
        f"{fmt_num(memory['kb_after_first_quarter'])} kB after the first quarter, "
        f"{fmt_num(memory['kb_after_last_quarter'])} kB after the last "
        f"({memory['growth_bytes_per_run']:.1f} bytes per run); handler maps left: {memory['leftovers']}"
    )


if __name__ == "__main__":
    main()
