"""Recording overhead of the classic AutoGen (AG2) adapter: a two-agent tool chat, bare vs recorded.

Real AG2 agents (an assistant with an llm_config and a user proxy that runs the tool) talk to a
scripted OpenAI-compatible server on 127.0.0.1 (in this process, on its own thread). Each round is
a tool call and a text answer. Three ways, interleaved, fresh agents every time:

- ``bare``: ``user.initiate_chat(...)`` alone;
- ``logging``: the same with AG2's ``runtime_logging`` on and a do-nothing `BaseLogger` (AG2's own
  cost of the seam the adapter uses);
- ``recorded``: ``AG2Target.run`` (hooks, the relay logger, and building the OPTO graph, all timed).

CPU time is the conversation thread's (``time.thread_time``: the server's threads do not count);
wall time includes the loopback HTTP. Target: the CPU the adapter adds (recorded - bare) is at most
1.3x the CPU that AG2's runtime_logging adds (logging - bare); the ratio recorded / bare is printed too.

    python bench/ag2_overhead.py            # 2, 8, 16 rounds
    python bench/ag2_overhead.py --quick
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit_json, fmt_num, machine, make_parser, progress, table

TARGET = 1.3


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def model(request: dict[str, Any]) -> Any:
    from opto_core.testing.scripted_server import tool_call

    last = request["messages"][-1]
    return f"The sum is {last['content']}." if last.get("role") == "tool" else tool_call("add", a=2, b=3)


class Quiet:
    def print(self, *objects: Any, **kwargs: Any) -> None:
        pass

    def send(self, message: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


def agents(server: Any) -> tuple[Any, Any]:
    from autogen import ConversableAgent, register_function

    assistant = ConversableAgent(
        "assistant",
        system_message="You add with the tool.",
        llm_config=server.llm_config(temperature=0.0),
        human_input_mode="NEVER",
    )
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER", max_consecutive_auto_reply=10_000)
    register_function(add, caller=assistant, executor=user, name="add", description="Adds a and b.")
    return assistant, user


def one(mode: str, server: Any, rounds: int) -> tuple[float, float]:
    from autogen import runtime_logging
    from autogen.io import IOStream
    from autogen.logger.base_logger import BaseLogger

    from opto_adapters.autogen.ag2 import AG2Target

    class Nothing(BaseLogger):
        def start(self):
            return "bench"

        def log_chat_completion(self, *a, **k):
            pass

        def log_new_agent(self, *a):
            pass

        def log_event(self, *a, **k):
            pass

        def log_new_wrapper(self, *a):
            pass

        def log_new_client(self, *a):
            pass

        def log_function_use(self, *a):
            pass

        def stop(self):
            pass

        def get_connection(self):
            return None

    assistant, user = agents(server)

    def chat(_: Any) -> Any:
        with IOStream.set_default(Quiet()):
            return user.initiate_chat(assistant, message="2+3?", max_turns=2 * rounds, silent=True)

    target = AG2Target(chat, [assistant, user]) if mode == "recorded" else None
    cpu, wall = time.thread_time(), time.perf_counter()
    if mode == "recorded":
        output, graph = target.run(None)
        assert not isinstance(output, Exception), output
        assert graph.meta["llm_calls"] == 2 * rounds, graph.meta
    elif mode == "logging":
        runtime_logging.start(logger=Nothing())
        try:
            chat(None)
        finally:
            runtime_logging.stop()
    else:
        chat(None)
    return time.thread_time() - cpu, time.perf_counter() - wall


def measure(rounds: int, repeats: int) -> dict[str, Any]:
    from opto_core.testing.scripted_server import ScriptedServer

    samples: dict[str, list[tuple[float, float]]] = {"bare": [], "logging": [], "recorded": []}
    with ScriptedServer([model], repeat_last=True) as server:
        for mode in samples:  # warm-up
            one(mode, server, rounds)
        for _ in range(repeats):
            for mode in samples:
                samples[mode].append(one(mode, server, rounds))
    cpu = {m: statistics.median(s[0] for s in v) for m, v in samples.items()}
    wall = {m: statistics.median(s[1] for s in v) for m, v in samples.items()}
    added_logging = cpu["logging"] - cpu["bare"]
    added_recorded = cpu["recorded"] - cpu["bare"]
    measurable = added_logging > 0.02 * cpu["bare"]
    return {
        "rounds": rounds,
        "llm_calls": 2 * rounds,
        "repeats": repeats,
        "cpu_bare_ms": cpu["bare"] * 1e3,
        "cpu_logging_ms": cpu["logging"] * 1e3,
        "cpu_recorded_ms": cpu["recorded"] * 1e3,
        "wall_bare_ms": wall["bare"] * 1e3,
        "wall_recorded_ms": wall["recorded"] * 1e3,
        "added_vs_logging": added_recorded / added_logging if measurable else None,
        "ratio_to_bare": cpu["recorded"] / cpu["bare"],
    }


def main() -> None:
    args = make_parser(__doc__.splitlines()[0]).parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("autogen.oai.client").setLevel(logging.ERROR)
    sizes = (2, 8) if args.quick else (2, 8, 16)
    repeats = 5 if args.quick else 9
    rows = []
    for rounds in sizes:
        progress(f"{rounds} rounds x {repeats} ...")
        rows.append(measure(rounds, repeats))
    if args.json:
        emit_json(rows)
        return
    info = machine()
    print(
        f"# AG2 recording overhead ({info['date']}; {info['cpu']}, {info['cpus']} CPUs; "
        f"load {info['load_average']}; Python {info['python']})\n"
    )
    print(
        table(
            rows,
            [
                ("rounds", "rounds", None),
                ("llm_calls", "LLM calls", None),
                ("cpu_bare_ms", "CPU bare ms", fmt_num),
                ("cpu_logging_ms", "CPU +runtime_logging ms", fmt_num),
                ("cpu_recorded_ms", "CPU recorded ms", fmt_num),
                ("wall_bare_ms", "wall bare ms", fmt_num),
                ("wall_recorded_ms", "wall recorded ms", fmt_num),
                ("added_vs_logging", "added / logging's added", lambda v: f"{v:.2f}"),
                ("ratio_to_bare", "recorded / bare (CPU)", lambda v: f"{v:.2f}"),
            ],
        )
    )
    print(
        f"\nmedians of {repeats} interleaved runs; target: added / logging's added <= {TARGET} "
        "(or, when runtime_logging adds too little to measure, the ratio to bare)."
    )


if __name__ == "__main__":
    main()
