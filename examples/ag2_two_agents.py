"""Optimize a classic AutoGen (AG2) two-agent chat: one OptoPrime step fixes a buggy registered tool.

An assistant (`ConversableAgent` with an llm_config) answers sums by calling the tool `add`, which a
user proxy (no llm_config: a pure tool executor) runs; `add` has a planted bug (it subtracts). Both
agents are real AG2 agents; their model is a scripted OpenAI-compatible server on 127.0.0.1, so
this runs offline. The optimizer's LLM is scripted too: its answer is the one a capable model
gives for this trace (the tool's result feeds the answer, so the tool's code gets the blame).

    python examples/ag2_two_agents.py
"""

from __future__ import annotations

import json
import logging
import re
import warnings

from autogen import ConversableAgent, register_function
from autogen.io import IOStream

from opto_adapters.autogen.ag2 import AG2Target, apply_values
from opto_core import OptoPrime, optimize
from opto_core.testing import ScriptedLLM, ScriptedServer, tool_call

FIXED_ADD = 'def add(a: int, b: int) -> int:\n    """Add two integers."""\n    return a + b\n'


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a - b


def model(request: dict) -> object:
    """The agents' scripted model: ask for the tool, then report its result."""
    last = request["messages"][-1]
    if last.get("role") == "tool":
        return f"The answer is {last['content']}. TERMINATE"
    a, b = map(int, re.findall(r"-?\d+", last["content"])[:2])
    return tool_call("add", a=a, b=b)


class Quiet:
    """An AG2 output stream that prints nothing (AG2 reports tool runs even with ``silent=True``)."""

    def print(self, *objects: object, **kwargs: object) -> None:
        pass

    def send(self, message: object) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


def feedback(example: dict, output: object) -> tuple[float, str]:
    if isinstance(output, Exception):
        return 0.0, f"the chat failed: {output}"
    found = re.findall(r"-?\d+", str(output))
    if found and int(found[-1]) == example["expected"]:
        return 1.0, "correct"
    return 0.0, f"expected {example['expected']}, the chat answered {output!r}"


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("autogen.oai.client").setLevel(logging.ERROR)
    with ScriptedServer([model], repeat_last=True) as server:
        assistant = ConversableAgent(
            "assistant",
            system_message="You add numbers with the add tool.",
            llm_config=server.llm_config(temperature=0.0),
            human_input_mode="NEVER",
        )
        user = ConversableAgent(
            "user",
            llm_config=False,
            human_input_mode="NEVER",
            is_termination_msg=lambda m: "TERMINATE" in (m.get("content") or ""),
        )
        register_function(add, caller=assistant, executor=user, name="add", description="Adds a and b.")

        def chat(example: dict) -> str:
            with IOStream.set_default(Quiet()):
                return user.initiate_chat(assistant, message=example["question"], max_turns=3, silent=True).summary

        target = AG2Target(chat, [assistant, user], input_keys=["question"])
        print("parameters:", ", ".join(p.name for p in target.parameters()))
        for note in target.notes:
            print("note:", note)
        trainset = [{"question": f"What is {a} + {b}?", "expected": a + b} for a, b in ((2, 3), (10, 4), (7, 8))]
        output, graph = target.run(trainset[0])
        print(f"before: {trainset[0]['question']} -> {output.strip()!r}")
        print(f"recorded: {len(graph)} nodes; each step and what fed it:")
        for node in graph.nodes:
            if node.kind == "op":
                print(
                    f"  {node.id} <- "
                    + ", ".join(f"{e.arg}={e.id}" + (f" ({e.via})" if e.via != "data" else "") for e in node.edges)
                )
        fix = json.dumps(
            {
                "reasoning": "The tool add returns a - b; every answer is the difference, so the "
                "tool's code is wrong, not the prompt.",
                "suggestion": {"user.tools.add.code": FIXED_ADD},
            }
        )
        result = optimize(
            target, trainset, feedback, OptoPrime(target.parameters(), ScriptedLLM([fix])), max_steps=1, batch_size=3
        )
        step = result.history[1]
        print(
            f"score before: {result.initial_score:.2f}, after one step: {result.best_score:.2f} "
            f"(kept: {step['kept']}); changed: {', '.join(sorted(step['proposal']['accepted']))}"
        )
        for example in trainset:
            print(f"  {example['question']} -> {target.run(example)[0].strip()!r}")
        # Deploying: the optimized values onto freshly built agents.
        fresh_user = ConversableAgent("user", llm_config=False)
        fresh_assistant = ConversableAgent("assistant", llm_config=server.llm_config(temperature=0.0))
        register_function(add, caller=fresh_assistant, executor=fresh_user, name="add", description="Adds a and b.")
        apply_values([fresh_assistant, fresh_user], target.values())
        print("deployed: add(2, 3) =", fresh_user.function_map["add"](a=2, b=3))


if __name__ == "__main__":
    main()
