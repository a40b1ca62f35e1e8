"""A plain `openai` program (the user's, knowing nothing of opto): draft, then summarize the draft.

Two calls, and the first answer feeds the second. The client reads OPENAI_BASE_URL and OPENAI_API_KEY
from the environment, so pointing OPENAI_BASE_URL at `opto gateway` is all it takes to record and
optimize it. Run it on its own:  python examples/gateway/draft_summarize.py owls
"""

import sys

import openai

MODEL = "gpt-4o-mini"


def draft_and_summarize(example: dict) -> str:
    client = openai.OpenAI()  # created here: it reads OPENAI_BASE_URL now, not at import
    draft = (
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "You write a first draft about the topic."},
                {"role": "user", "content": f"Topic: {example['topic']}"},
            ],
        )
        .choices[0]
        .message.content
    )
    return (
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "You summarize a draft in one sentence."},
                {"role": "user", "content": f"Summarize this draft:\n{draft}"},
            ],
        )
        .choices[0]
        .message.content
    )


if __name__ == "__main__":
    topic = " ".join(sys.argv[1:]) or sys.stdin.read().strip()
    print(draft_and_summarize({"topic": topic}))
