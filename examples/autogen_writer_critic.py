"""Optimize an AutoGen writer/critic team whose critic's tool has a planted bug (offline).

The team is real AgentChat (RoundRobinGroupChat, AssistantAgents, a FunctionTool that really
runs); only the models are AutoGen's ReplayChatCompletionClient. The optimizer is OptoPrime; by
default its LLM is scripted (`opto_core.testing.ScriptedLLM`) with the answer a good optimizer
gives, so the example runs anywhere in a second and shows the mechanics: the recorded graph, the
problem OptoPrime reads, one step that rewrites the tool's code and the writer's system message,
the write-back checked on the next recorded request, and the score going from 0 to 1.

    python examples/autogen_writer_critic.py             # offline, scripted optimizer
    python examples/autogen_writer_critic.py --llm       # OptoPrime asks a real LLM (OPENAI_* env vars)
    python examples/autogen_writer_critic.py --show-problem
    python examples/autogen_writer_critic.py --save values.json   # then apply_values(team, "values.json")
"""

from __future__ import annotations

import argparse
import logging
import sys

from opto_adapters.autogen.demo import build_demo, scripted_fix
from opto_core import Feedback, OptoPrime, backward, optimize, render
from opto_core.testing import ScriptedLLM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--llm", action="store_true", help="use a real LLM for OptoPrime (opto_core.llm.client.OpenAIChat)"
    )
    parser.add_argument("--show-problem", action="store_true", help="print the problem OptoPrime reads")
    parser.add_argument(
        "--save",
        metavar="PATH",
        help="save the optimized values (opto-values/1) for opto_adapters.autogen.apply_values",
    )
    args = parser.parse_args(argv)
    logging.getLogger("autogen_core.events").setLevel(logging.ERROR)  # the replay client's notices

    target, trainset, feedback_fn = build_demo()

    # One traced run: what the critic said, and the graph of the whole team run.
    output, graph = target.run(trainset[0])
    print(f"before: critic says {output!r}; feedback: {Feedback.coerce(feedback_fn(trainset[0], output)).render()}")
    print(f"graph: {graph!r}; agents {graph.meta['agents']}, {graph.meta['llm_calls']} LLM calls")
    if args.show_problem:
        print(render([backward(graph, feedback_fn(trainset[0], output))]))

    if args.llm:
        from opto_core import OpenAIChat

        llm = OpenAIChat()
    else:
        llm = ScriptedLLM([scripted_fix()])
    result = optimize(target, trainset, feedback_fn, OptoPrime(llm=llm), max_steps=1, batch_size=len(trainset))

    print(f"score: {result.initial_score} -> {result.best_score} ({result.stopped_reason})")
    step = result.history[-1]
    print("changed:", sorted(k for k, v in step.get("values_after", {}).items() if step["values_before"].get(k) != v))
    output, graph = target.run(trainset[0])  # the runs during optimize happened in worker processes
    verified = sorted({name for g in target.graphs for name in g.meta.get("write_back_verified", [])})
    print(f"after: critic says {output!r}; write-back seen on the next recorded requests: {verified}")
    if args.save:
        print(f"saved the values to {target.save_values(args.save, score=result.best_score)}")
    if not args.llm and result.best_score != 1.0:
        print("unexpected: the scripted fix did not reach a score of 1.0", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
