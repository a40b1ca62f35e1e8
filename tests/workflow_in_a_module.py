"""A plain-Python workflow that lives in a module, the way a package holds one: its prompt and its op
are module globals that `run` reaches by name (tests/test_payload.py sends it to worker processes)."""

from opto_core import Parameter
from opto_core.kernel.trace import op

PROMPT = Parameter("prompt", "text", "Answer:")


@op(trainable=True, parameter_name="answer.code")
def answer(prompt: str, question: str) -> str:
    return prompt + " " + question


def run(question: str) -> str:
    return answer(PROMPT, question)
