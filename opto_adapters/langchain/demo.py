"""The LangChain demo behind ``opto demo`` (and ``examples/langchain_fix_tool.py``).

A cashier chain: a chat prompt, a chat model with a tool bound, and the tool ``compute_total``,
called in a small agent loop (a `RunnableLambda`). Three things are wrong at the start, and each
is visible in the trace:

- the model's ``max_tokens`` is 4, so every answer is cut off mid-number ("The total is 19");
- the tool has a planted bug: it takes the discount off the first item only;
- the system prompt does not ask for the format the feedback wants (``Total: $45.00``).

Each is fixed by a different part of the optimizer: ``max_tokens`` is a bounded number, so the
search part (`opto_core.Hybrid`'s sampler) tunes it from the scores alone, with no model skill; the
tool's code and the prompt are the LLM's to rewrite from the trace. Scores are judged on held-out
examples (the validation set). With ``max_tokens`` fixed, the baskets the bug does not touch (one
item, or no discount) get the right amount in the wrong format (0.5 each); the prompt and the tool
fix the rest.

The chat model is a deterministic stand-in (`cashier_reply`, run by `EchoChatModel`): it asks for
the tool, then phrases the tool's result according to its system prompt, cut at ``max_tokens`` (a
token here is a word or a punctuation mark), the way a real model would, but predictably, so the
demo needs no API key and no download. The optimizer's LLM is real in ``opto demo`` and scripted in
the tests and the example.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool

from opto_adapters.langchain.target import ChainTarget
from opto_adapters.langchain.testing import EchoChatModel
from opto_core.kernel.feedback import Feedback

SYSTEM = "You are a cashier. Use the compute_total tool, then tell the customer the total."


def compute_total(prices: list[float], discount_percent: float) -> float:
    """The amount to pay for the items after a discount given in percent (10 means 10 % off)."""
    subtotal = sum(prices)
    return round(subtotal - prices[0] * discount_percent / 100, 2)


FIXED_COMPUTE_TOTAL = '''def compute_total(prices: list[float], discount_percent: float) -> float:
    """The amount to pay for the items after a discount given in percent (10 means 10 % off)."""
    subtotal = sum(prices)
    return round(subtotal - subtotal * discount_percent / 100, 2)
'''
FIXED_SYSTEM = (
    "You are a cashier. Use the compute_total tool, then answer with exactly 'Total: $X.XX' with two decimals."
)
#: The model's answer budget at the start: too small for any answer with an amount.
START_MAX_TOKENS = 4
_TOKENS = re.compile(r"\w+|[^\w\s]")


def cut(text: str, max_tokens: int) -> str:
    """``text`` cut after ``max_tokens`` tokens (a word or a punctuation mark each), as a model stops."""
    tokens = list(_TOKENS.finditer(text))
    return text if len(tokens) <= max_tokens else text[: tokens[max_tokens - 1].end()] if max_tokens > 0 else ""


def cashier_reply(messages: list[BaseMessage], call: dict[str, Any]) -> AIMessage:
    """The stand-in model: asks for the tool once, then phrases its result per prompt and temperature."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        question = next((str(m.content) for m in messages if m.type == "human"), "")
        numbers = re.findall(r"\d+(?:\.\d+)?", question.split("discount")[0])
        discount = re.search(r"discount (\d+(?:\.\d+)?)", question)
        args = {
            "prices": [float(n) for n in numbers],
            "discount_percent": float(discount.group(1)) if discount else 0.0,
        }
        return AIMessage("", tool_calls=[{"name": "compute_total", "args": args, "id": f"call_{len(messages)}"}])
    value = float(results[-1].content)
    system = next((str(m.content) for m in messages if m.type == "system"), "")
    answer = f"Total: ${value:.2f}" if "two decimals" in system.lower() else f"The total is {value:.2f}."
    return AIMessage(cut(answer, int(call["max_tokens"])))


def build_chain() -> tuple[Any, dict[str, Any]]:
    """A fresh cashier chain (new objects: the planted bug and wrong settings are back)."""
    tool = StructuredTool.from_function(compute_total)
    model = EchoChatModel(model_name="cashier-sim", temperature=0.0, max_tokens=START_MAX_TOKENS, reply=cashier_reply)
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), ("human", "{question}"), MessagesPlaceholder("scratchpad", optional=True)]
    )
    llm = model.bind_tools([tool])
    step = prompt | llm

    def cashier(inputs: dict[str, Any]) -> str:
        scratchpad: list[BaseMessage] = []
        reply: Any = None
        for _ in range(3):
            reply = step.invoke({"question": inputs["question"], "scratchpad": scratchpad})
            if not reply.tool_calls:
                return str(reply.content)
            scratchpad.append(reply)
            scratchpad.extend(tool.invoke(call) for call in reply.tool_calls)
        return str(reply.content)

    chain = RunnableLambda(cashier, name="cashier")
    return chain, {"tool": tool, "model": model, "prompt": prompt, "llm": llm}


#: Training baskets (prices, discount in percent), then the held-out ones the steps are judged on.
TRAIN_BASKETS = [
    ([12.5, 37.5], 10),
    ([19.99], 25),
    ([9.99, 5.02, 15.0], 0),
    ([100.0, 50.0], 20),
    ([7.4], 10),
    ([3.5, 6.5], 50),
]
HELD_OUT_BASKETS = [([24.99], 20), ([4.25, 3.1], 0), ([15.5, 20.0], 10), ([59.8], 15)]


def examples(baskets: list[tuple[list[float], float]] = TRAIN_BASKETS) -> list[dict[str, Any]]:
    out = []
    for prices, discount in baskets:
        question = "Items: " + ", ".join(f"{p:.2f}" for p in prices) + f"; discount {discount}%"
        total = round(sum(prices) * (1 - discount / 100), 2)
        out.append({"question": question, "expected": f"Total: ${total:.2f}", "total": total})
    return out


def feedback(example: dict[str, Any], output: str) -> Feedback:
    """1 for the exact answer; 0.5 for the right amount in another form; 0 for a wrong amount."""
    if output.strip() == example["expected"]:
        return Feedback(1.0, "Correct.")
    amounts = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", output.replace(",", ""))]
    if any(abs(a - example["total"]) < 0.005 for a in amounts):
        return Feedback(0.5, f"The amount is right but the answer must be exactly {example['expected']!r}.")
    return Feedback(0.0, f"Wrong amount: expected {example['expected']!r}, got {output!r}.")


def build_demo() -> tuple[ChainTarget, list[Any], Callable[[Any, Any], Any], list[Any]]:
    """``(target, trainset, feedback_fn, valset)`` for ``opto demo`` and ``opto resume``."""
    chain, _ = build_chain()
    target = ChainTarget(chain, exclude=["*.temperature", "*.description", "prompt.human"], input_keys=["question"])
    return target, examples(), feedback, examples(HELD_OUT_BASKETS)


def scripted_fix() -> str:
    """The optimizer answer that fixes all three problems in one step (for tests and the example)."""
    return json.dumps(
        {
            "reasoning": "compute_total takes the discount off the first item only; every answer stops after 4 "
            "tokens, so max_tokens is far too small; the format is not the one requested, so the "
            "system prompt must ask for it.",
            "suggestion": {
                "tools.compute_total.code": FIXED_COMPUTE_TOTAL,
                "prompt.system": FIXED_SYSTEM,
                "model.max_tokens": 64,
            },
        }
    )
