"""Optimize a LangChain chain in place: one OptoPrime step fixes a tool's code, the prompt and max_tokens.

The chain (opto_adapters/langchain/demo.py) is a cashier: a ChatPromptTemplate, a chat model with
the tool `compute_total` bound, and a small agent loop. The tool has a planted bug (the discount
comes off the first item only), the prompt does not ask for the answer format, and max_tokens is
so small that every answer is cut off. The chat model is a deterministic stand-in so that this
runs offline. Steps are judged on held-out examples.

The optimizer's LLM is scripted here, so the run is reproducible: its answer is the one a capable
model gives for this trace. Pass --base-url/--model (or set OPENAI_BASE_URL / OPENAI_API_KEY) to ask
a real model instead.

    python examples/langchain_fix_tool.py
"""

import argparse

from opto_adapters.langchain import OptoCallbackHandler, parameters_of
from opto_adapters.langchain.demo import build_chain, build_demo, examples, scripted_fix
from opto_core import OptoPrime, optimize
from opto_core.testing import ScriptedLLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="ask this OpenAI-compatible endpoint instead of the scripted answer")
    parser.add_argument("--model", help="model name at --base-url")
    args = parser.parse_args()

    # 1. Drop-in tracing: one callback, the chain unchanged. Passing the chain's parameters (found by
    #    parameters_of) links each run to the prompt, model setting or tool code it used.
    chain, _ = build_chain()
    handler = OptoCallbackHandler(parameters_of(chain))
    example = examples()[0]
    answer = chain.invoke({"question": example["question"]}, config={"callbacks": [handler]})
    graph = handler.last_graph
    print(f"question: {example['question']}\nanswer:   {answer}   (expected {example['expected']})")
    print(f"traced:   {len(graph)} nodes; each step and what fed it:")
    for node in graph.nodes:
        if node.kind == "op":
            parents = ", ".join(f"{e.arg}={e.id}" for e in node.edges)
            print(f"  {node.id} <- {parents}")

    # 2. Optimization: a target over the same kind of chain, the shared loop, OptoPrime.
    target, trainset, feedback, valset = build_demo()
    if args.base_url:
        from opto_core import OpenAIChat

        llm = OpenAIChat(base_url=args.base_url, model=args.model)
    else:
        llm = ScriptedLLM([scripted_fix()])
    result = optimize(
        target, trainset, feedback, OptoPrime(target.parameters(), llm), valset, max_steps=1, batch_size=3
    )
    step = result.history[1]
    print(
        f"\nscore on the held-out examples before: {result.initial_score:.2f}, after one step: "
        f"{result.best_score:.2f} (kept: {step['kept']})"
    )
    print("changed in one step: " + ", ".join(sorted(step["proposal"]["accepted"])))
    for name, reason in step["proposal"]["rejected"].items():
        print(f"rejected {name}: {reason}")
    for example in trainset[:3]:
        output, _ = target.run(example)
        print(f"  {example['question']!r} -> {output!r}")
    values = {p.name: p.value for p in target.parameters()}
    print(f"\nprompt.system: {values['prompt.system']}\nmodel.max_tokens: {values['model.max_tokens']}")
    print("tools.compute_total.code:\n" + values["tools.compute_total.code"])


if __name__ == "__main__":
    main()
