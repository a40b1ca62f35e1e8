"""An offline writer/critic team whose critic has a planted bug in its tool.

The writer drafts a product tagline; the critic checks the draft's length with its tool
``check_length`` and reports the tool's verdict (``reflect_on_tool_use=False``: the verdict is the
tool's own output). The planted bug: the tool counts *characters*, not words, so the critic
rejects drafts that are within the word limit. Feedback on the critic's verdict traces back
through the tool run to the tool's code (and through the prompts to both system messages).

Only the model is fake: each agent has AutoGen's own ``ReplayChatCompletionClient``, scripted per
example (``before_run`` rewinds it), so the team, the tool execution and the recorded prompts are
real. A replay model does not read its prompt, so a changed system message shows in the
recorded requests but cannot change what the scripted model says; the tool fix changes the
outcome because the tool really runs.

    target, trainset, feedback_fn = build_demo()
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage

try:
    from autogen_ext.models.replay import ReplayChatCompletionClient
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the AutoGen demo needs autogen-ext (its replay client): pip install 'opto-adapters[autogen]'"
    ) from exc

from opto_adapters.autogen.target import TeamTarget, wrap_team

#: Tool calls from a replay client need a model that says it can call functions.
MODEL_INFO = {
    "function_calling": True,
    "vision": False,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}

WRITER_SYSTEM = "You write short product taglines."
CRITIC_SYSTEM = "You check the writer's draft with check_length and report its verdict."

#: The examples: a task with its word limit, and the draft the (scripted) writer produces.
EXAMPLES: list[dict[str, Any]] = [
    {
        "task": "Write a tagline for a solar lantern in at most 8 words.",
        "limit": 8,
        "draft": "Sunlight by day, your light by night.",
    },
    {
        "task": "Write a tagline for a reusable bottle in at most 6 words.",
        "limit": 6,
        "draft": "Refill the planet, one sip at a time, every single day.",
    },
    {
        "task": "Write a tagline for a folding bike in at most 7 words.",
        "limit": 7,
        "draft": "Fold it, carry it, ride anywhere.",
    },
    {
        "task": "Write a tagline for noise-cancelling headphones in at most 5 words.",
        "limit": 5,
        "draft": "Silence the world, hear what matters most to you.",
    },
]


def check_length(text: str, limit: int) -> str:
    """Check that a draft has at most `limit` words; returns APPROVED or REJECTED with the count."""
    count = len(text)
    if count <= limit:
        return f"APPROVED: {count} words (limit {limit})"
    return f"REJECTED: {count} words (limit {limit})"


FIXED_CHECK_LENGTH = '''def check_length(text: str, limit: int) -> str:
    """Check that a draft has at most `limit` words; returns APPROVED or REJECTED with the count."""
    count = len(text.split())
    if count <= limit:
        return f"APPROVED: {count} words (limit {limit})"
    return f"REJECTED: {count} words (limit {limit})"
'''

IMPROVED_WRITER_SYSTEM = (
    "You write short product taglines. Count the words of your draft and stay within the word limit the task gives."
)


def true_verdict(example: dict[str, Any]) -> str:
    return "APPROVED" if len(example["draft"].split()) <= example["limit"] else "REJECTED"


def feedback_fn(example: dict[str, Any], output: Any) -> tuple[float, str]:
    """1 when the critic's verdict and word count are right, else 0 with what went wrong."""
    words = len(example["draft"].split())
    expected = true_verdict(example)
    text = str(output)
    match = re.match(r"(APPROVED|REJECTED): (\d+) words", text)
    if match and match.group(1) == expected and int(match.group(2)) == words:
        return 1.0, f"Correct: the draft has {words} words (limit {example['limit']}), verdict {expected}."
    return 0.0, (
        f"Wrong verdict: the critic said {text!r}, but the writer's draft {example['draft']!r} has {words} "
        f"words for a limit of {example['limit']}, so the verdict should be {expected} with {words} words."
    )


def _tool_call(example: dict[str, Any]) -> CreateResult:
    arguments = json.dumps({"text": example["draft"], "limit": example["limit"]})
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id="call_check", name="check_length", arguments=arguments)],
        usage=RequestUsage(prompt_tokens=40, completion_tokens=12),
        cached=False,
    )


def build_team() -> tuple[RoundRobinGroupChat, Callable[[dict[str, Any]], None], dict[str, ReplayChatCompletionClient]]:
    """The unwrapped team, a function that scripts its models for one example, and the clients."""
    writer_client = ReplayChatCompletionClient([], model_info=MODEL_INFO)
    critic_client = ReplayChatCompletionClient([], model_info=MODEL_INFO)
    writer = AssistantAgent(
        "writer", writer_client, system_message=WRITER_SYSTEM, description="Writes a tagline draft."
    )
    critic = AssistantAgent(
        "critic",
        critic_client,
        tools=[check_length],
        system_message=CRITIC_SYSTEM,
        reflect_on_tool_use=False,
        description="Checks the draft's length with a tool.",
    )
    team = RoundRobinGroupChat([writer, critic], termination_condition=MaxMessageTermination(3))

    def script(example: dict[str, Any]) -> None:
        writer_client.chat_completions = [example["draft"]]
        critic_client.chat_completions = [_tool_call(example)]
        writer_client.reset()
        critic_client.reset()

    return team, script, {"writer": writer_client, "critic": critic_client}


def build_demo() -> tuple[TeamTarget, list[dict[str, Any]], Callable[[dict[str, Any], Any], tuple[float, str]]]:
    """``(target, trainset, feedback_fn)`` for `opto_core.optimize`: the critic's verdict is the output."""
    team, script, _ = build_team()
    target = wrap_team(team, output="critic", before_run=script, temperature=False)
    return target, [dict(example) for example in EXAMPLES], feedback_fn


def scripted_fix() -> str:
    """The optimizer answer the offline example scripts: fix the tool, sharpen the writer's prompt."""
    return json.dumps(
        {
            "reasoning": "The critic's verdicts come straight from check_length, whose count is len(text): it counts "
            "characters, not words, so every draft looks far too long. Count words with "
            "len(text.split()). The writer should also respect the limit in the task.",
            "suggestion": {
                "critic.tools.check_length.code": FIXED_CHECK_LENGTH,
                "writer.system_message": IMPROVED_WRITER_SYSTEM,
            },
        }
    )
