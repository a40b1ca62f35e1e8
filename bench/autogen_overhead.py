"""Recording overhead of the AutoGen adapter: a two-agent round-robin team, wrapped vs unwrapped.

The team is real AgentChat (``RoundRobinGroupChat`` of two ``AssistantAgent``s, default unbounded
model context); the models are AutoGen's ``ReplayChatCompletionClient`` (no network, so the
figures are the framework's own cost plus ours, the worst case for relative overhead: with any
real model the LLM latency dwarfs both). For conversations of several lengths, and with or
without a tool call per writer turn, the script times ``await team.run(task)`` of a fresh team,
unwrapped and wrapped with ``wrap_team`` (recording client, turn observer, and building the OPTO
graph at the end of the run, all inside the timed call), interleaved, best of ``--repeats`` (by default
as many as fit in about 2 s per configuration and side, more for short runs, which are the noisiest).
It prints messages per second both ways, the ratio of the best times, and the median of the ratios
of back-to-back pairs (robust to load from other processes). Target: ratio <= 1.3.

    python bench/autogen_overhead.py            # 4, 16, 40 messages; plain and tool teams
    python bench/autogen_overhead.py --quick
    python bench/autogen_overhead.py --json
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit_json, fmt_num, fmt_s, machine, make_parser, progress, table

TARGET_RATIO = 1.3
MODEL_INFO = {
    "function_calling": True,
    "vision": False,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def build_team(messages: int, tools: bool) -> Any:
    """A fresh writer/critic team whose run has exactly ``messages`` messages (task included)."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination
    from autogen_agentchat.teams import RoundRobinGroupChat
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient

    turns = messages - 1
    writer_script: list[Any] = []
    for k in range(turns):
        if tools:
            writer_script.append(
                CreateResult(
                    finish_reason="function_calls",
                    usage=RequestUsage(prompt_tokens=10, completion_tokens=5),
                    content=[FunctionCall(id=f"c{k}", name="add", arguments=json.dumps({"a": k, "b": 1}))],
                    cached=False,
                )
            )
        writer_script.append(f"Draft {k}: a short paragraph about the topic, revised after the feedback.")
    critic_script = [f"Critique {k}: tighten the second sentence and keep the tone." for k in range(turns)]
    writer = AssistantAgent(
        "writer",
        ReplayChatCompletionClient(writer_script, model_info=MODEL_INFO),
        tools=[add] if tools else None,
        reflect_on_tool_use=True if tools else None,
        system_message="You write drafts.",
    )
    critic = AssistantAgent(
        "critic",
        ReplayChatCompletionClient(critic_script, model_info=MODEL_INFO),
        system_message="You criticise drafts.",
    )
    return RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(messages))


async def one_run(messages: int, tools: bool, wrapped: bool) -> tuple[float, int, int]:
    """(seconds, messages in the result, graph nodes) of one timed team run."""
    from opto_adapters.autogen import wrap_team

    team = build_team(messages, tools)
    target = wrap_team(team) if wrapped else None
    gc.collect()
    gc.disable()  # as timeit does: a collection landing in one side's run is noise, not overhead
    try:
        start = time.perf_counter()
        result = await team.run(task="Write about tide pools.")
        seconds = time.perf_counter() - start
    finally:
        gc.enable()
    chat = [m for m in result.messages if type(m).__name__ == "TextMessage"]
    nodes = len(target.last_graph) if target is not None else 0
    return seconds, len(chat), nodes


async def measure(messages: int, tools: bool, repeats: int) -> dict[str, Any]:
    await one_run(messages, tools, False)  # warm up both paths
    await one_run(messages, tools, True)
    bare, wrapped, nodes, count = [], [], 0, 0
    for _ in range(repeats):  # interleaved, so drift hits both alike
        seconds, count, _ = await one_run(messages, tools, False)
        bare.append(seconds)
        seconds, _, nodes = await one_run(messages, tools, True)
        wrapped.append(seconds)
    b, w = min(bare), min(wrapped)
    paired = statistics.median(x / y for x, y in zip(wrapped, bare))
    return {
        "median_paired_ratio": paired,
        "table": "autogen_overhead",
        "team": "round_robin_2",
        "tools": tools,
        "messages": count,
        "unwrapped_s": b,
        "wrapped_s": w,
        "unwrapped_msg_per_s": count / b,
        "wrapped_msg_per_s": count / w,
        "ratio": w / b,
        "target_ratio": TARGET_RATIO,
        "within_target": paired <= TARGET_RATIO,
        "graph_nodes": nodes,
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (best is kept)")
    args = parser.parse_args(argv)
    logging.getLogger("autogen_core.events").setLevel(logging.ERROR)  # the replay client's notices
    sizes = [4, 16] if args.quick else [4, 16, 40]
    budget = 0.5 if args.quick else 2.0  # seconds of timed runs per configuration and side
    rows = []
    for tools in (False, True):
        for messages in sizes:
            # short runs are the noisiest on a shared machine: give each size about the same time budget
            repeats = args.repeats or max(5, min(200, int(budget / (0.0012 * messages * (2 if tools else 1)))))
            progress(f"{messages} messages, tools={tools}, {repeats} repeats ...")
            rows.append(asyncio.run(measure(messages, tools, repeats)))
    if args.json:
        emit_json([{"table": "machine", **machine()}, *rows])
        return rows
    info = machine()
    print(f"AutoGen recording overhead ({info['cpu']}, {info['cpus']} CPUs, Python {info['python']}, {info['date']})")
    print(
        table(
            rows,
            [
                ("tools", "tool per turn", lambda v: "yes" if v else "no"),
                ("messages", "messages", None),
                ("unwrapped_s", "unwrapped", fmt_s),
                ("wrapped_s", "wrapped", fmt_s),
                ("unwrapped_msg_per_s", "msg/s unwrapped", fmt_num),
                ("wrapped_msg_per_s", "msg/s wrapped", fmt_num),
                ("ratio", "time ratio (best)", lambda v: f"{v:.2f}x"),
                ("median_paired_ratio", "ratio (median of pairs)", lambda v: f"{v:.2f}x"),
                ("graph_nodes", "graph nodes", None),
            ],
        )
    )
    worst = max(row["median_paired_ratio"] for row in rows)
    print(
        f"worst median paired ratio {worst:.2f}x (target <= {TARGET_RATIO}x): "
        f"{'met' if worst <= TARGET_RATIO else 'NOT met'}; worst ratio of best times "
        f"{max(row['ratio'] for row in rows):.2f}x (noisy when other processes load the CPUs)"
    )
    return rows


if __name__ == "__main__":
    main()
