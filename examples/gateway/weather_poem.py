"""An OpenAI Agents SDK program (the user's, knowing nothing of opto): a triage agent with a tool that hands
off to a poet. The SDK calls POST /v1/responses by default; it honours OPENAI_BASE_URL and OPENAI_API_KEY.
Turn its own tracing off (OPENAI_AGENTS_DISABLE_TRACING=1), or it exports to OpenAI.
Run it on its own:  OPENAI_AGENTS_DISABLE_TRACING=1 python examples/gateway/weather_poem.py Oslo
"""

import sys

from agents import Agent, Runner, function_tool


@function_tool
def get_weather(city: str) -> str:
    """The weather report for a city."""
    return f"Sunny and 21C in {city}"  # your real lookup here


def weather_poem(example: dict) -> str:
    poet = Agent(name="Poet", instructions="You write a two-line poem from the weather report.", model="gpt-4o-mini")
    triage = Agent(
        name="Triage",
        instructions="You look up the weather for the city, then hand off to the poet.",
        tools=[get_weather],
        handoffs=[poet],
        model="gpt-4o-mini",
    )
    return Runner.run_sync(triage, f"A weather poem for {example['city']}").final_output


if __name__ == "__main__":
    print(weather_poem({"city": " ".join(sys.argv[1:]) or sys.stdin.read().strip()}))
