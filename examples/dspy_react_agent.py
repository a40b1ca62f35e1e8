"""Optimize a DSPy ReAct agent whose tool has a bug, with OptoTeleprompter (offline).

The agent converts temperatures with a tool, `to_fahrenheit`, that adds 23 instead of 32, and its
answers carry too many decimals. OptoPrime reads the agent's trace (the tool's code and result,
the prompts, the metric's feedback) and changes the tool's code and the agent's instructions in
one step: no DSPy optimizer can reach the tool's code.

Runs offline: the agent's LM is a rule-based stand-in (DSPy's custom engine; in real use,
`dspy.configure(lm=dspy.LM("openai/gpt-4o-mini"))`) and the optimizer's answer is scripted.
Pass --base-url/--model (or set OPENAI_BASE_URL / OPENAI_API_KEY) to let a real model optimize.
"""

import argparse
import json
import tempfile
from pathlib import Path

import dspy

from opto_adapters.dspy import OptoTeleprompter, apply_values, load_optimized, save_optimized
from opto_adapters.dspy.demo import agent_policy, examples, metric
from opto_adapters.dspy.testing import rule_lm
from opto_core.testing import ScriptedLLM


def to_fahrenheit(celsius: float) -> float:
    """Convert a temperature in Celsius to Fahrenheit."""
    return celsius * 9 / 5 + 23  # planted bug: the offset is 32


FIX = {
    "tools.to_fahrenheit.code": (
        'def to_fahrenheit(celsius: float) -> float:\n'
        '    """Convert a temperature in Celsius to Fahrenheit."""\n'
        '    return celsius * 9 / 5 + 32\n'
    ),
    "extract.predict.instructions": "Give the answer as the number only, with one decimal place (e.g. 98.6).",
}


def build_agent() -> dspy.ReAct:
    return dspy.ReAct("question -> answer", tools=[to_fahrenheit], max_iters=3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    if args.base_url or args.model:
        from opto_core import OpenAIChat

        llm = OpenAIChat(base_url=args.base_url, model=args.model)
    else:
        llm = ScriptedLLM(
            [
                json.dumps(
                    {
                        "reasoning": "The tool adds 23 where the formula needs 32, and the extract "
                        "step writes four decimals and a unit; the metric wants one "
                        "decimal and no unit.",
                        "suggestion": FIX,
                    }
                ),
                json.dumps({"reasoning": "All answers are right now.", "suggestion": {}}),
            ],
            repeat_last=True,
        )

    trainset, valset = examples((0, 100, 37, -40)), examples((15, 60, -10))
    agent = build_agent()
    run_dir = Path(tempfile.mkdtemp(prefix="opto-dspy-react-"))
    with dspy.context(lm=rule_lm(agent_policy)):
        evaluate = dspy.Evaluate(devset=valset, metric=lambda g, p, t=None: metric(g, p).score, display_progress=False)
        print(f"before: {evaluate(agent).score:.0f}%  e.g. {agent(question='What is 37 C in Fahrenheit?').answer!r}")
        teleprompter = OptoTeleprompter(
            metric=metric, llm=llm, max_steps=args.steps, batch_size=4, num_threads=2, run_dir=str(run_dir)
        )
        optimized = teleprompter.compile(agent, trainset=trainset, valset=valset)
        print(
            f"after:  {evaluate(optimized).score:.0f}%  e.g. "
            f"{optimized(question='What is 37 C in Fahrenheit?').answer!r}"
        )
        print(f"student untouched: {agent(question='What is 37 C in Fahrenheit?').answer!r}")

        for record in optimized.opto_history[1:]:
            proposal = record.get("proposal", {})
            print(f"step {record['step']}: kept={record['kept']} changed={sorted(proposal.get('accepted', {}))}")
        print("new tool code:\n" + optimized.candidate_programs[0]["values"]["tools.to_fahrenheit.code"])

        save_optimized(optimized, run_dir / "agent.json")
        fresh = load_optimized(build_agent(), run_dir / "agent.json")
        print(f"reloaded: {fresh(question='What is 100 C in Fahrenheit?').answer!r}")
        # deploying: the optimized values as one opto-values file, written into a freshly built agent
        values = optimized.opto_result.save_values(str(run_dir / "values.json"))
        deployed = build_agent()
        applied = apply_values(deployed, values)
        print(f"deployed ({len(applied)} values): {deployed(question='What is 100 C in Fahrenheit?').answer!r}")
    print(
        f"score {optimized.opto_history[0]['eval_score']:.2f} -> {optimized.score:.2f}; run directory: "
        f"{optimized.opto_report}"
    )


if __name__ == "__main__":
    main()
