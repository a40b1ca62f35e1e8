"""Trace a plain-Python workflow, look at its graph, and run one OptoPrime step on it.

Runs offline: the optimizer's model is scripted here. Pass --base-url/--model (or set
OPENAI_BASE_URL / OPENAI_API_KEY) to ask a real model instead.
"""

import argparse
import json

from opto_core import Feedback, OptoPrime, Parameter, backward, capture, op, render
from opto_core.testing import ScriptedLLM

greeting = Parameter("greeting", "text", "hello", description="the word the message starts with")


@op(trainable=True)
def shout(text: str) -> str:
    """Make the text loud."""
    return text.lower()  # planted bug: should be upper()


@op
def compose(word: str, name: str) -> str:
    """Join the greeting and the name."""
    return f"{word}, {name}!"


def workflow(name: str) -> str:
    return shout(compose(greeting, name))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    args = parser.parse_args()

    print("untraced:", workflow("Ada"))
    with capture() as run:
        result = workflow(run.input("name", "Ada"))
        run.mark_output(result)
    for node in run.graph.nodes:
        print(f"{node.id:<14} {node.kind:<9} parents={node.parents} value={node.value!r:.60}")

    instance = backward(run.graph, Feedback(0.0, "The message must be in capital letters and start with 'Welcome'."))
    print(render(instance, budget_tokens=1000))

    if args.base_url or args.model:
        from opto_core import OpenAIChat

        llm = OpenAIChat(base_url=args.base_url, model=args.model)
    else:
        llm = ScriptedLLM(
            [
                json.dumps(
                    {
                        "reasoning": "shout lowercases the text; the feedback wants capitals and 'Welcome'.",
                        "suggestion": {
                            "greeting": "Welcome",
                            "shout.code": 'def shout(text: str) -> str:\n    """Make the text loud."""\n    return text.upper()\n',
                        },
                    }
                )
            ]
        )
    optimizer = OptoPrime([greeting, shout.code], llm)
    proposal = optimizer.step(instance)
    print("reasoning:", proposal.reasoning)
    print("accepted:", list(proposal.accepted), "rejected:", proposal.rejected)
    for parameter in (greeting, shout.code):
        if parameter.name in proposal.accepted:
            parameter.value = proposal.accepted[parameter.name]
    print("after one step:", workflow("Ada"))


if __name__ == "__main__":
    main()
