"""The LangChain demo behind ``opto demo`` (and ``examples/langchain_fix_tool.py``).

A cashier chain: a chat prompt, a chat model with a tool bound, and the tool ``compute_total``,
called in a small agent loop (a `RunnableLambda`). Three things are wrong at the start, and each
is visible in the trace:

- the tool has a planted bug: it treats ``discount_percent`` as a fraction (10 means 1000 %);
- the system prompt does not ask for the format the feedback wants (``Total: $45.00``);
- the model runs at a high temperature, where it rounds its answer ("About $45").

The chat model is a deterministic stand-in (`cashier_reply`, run by `EchoChatModel`): it asks for
the tool, then phrases the tool's result according to its system prompt and temperature, the way
a real model would, but predictably, so the demo needs no API key and no download. The optimizer's
LLM is real in ``opto demo`` and scripted in the tests and the example.
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
    return round(subtotal - subtotal * discount_percent, 2)


FIXED_COMPUTE_TOTAL = '''def compute_total(prices: list[float], discount_percent: float) -> float:
    """The amount to pay for the items after a discount given in percent (10 means 10 % off)."""
    subtotal = sum(prices)
    return round(subtotal - subtotal * discount_percent / 100, 2)
'''
FIXED_SYSTEM = ("You are a cashier. Use the compute_total tool, then answer with exactly "
                "'Total: $X.XX' with two decimals.")


def cashier_reply(messages: list[BaseMessage], call: dict[str, Any]) -> AIMessage:
    """The stand-in model: asks for the tool once, then phrases its result per prompt and temperature."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        question = next((str(m.content) for m in messages if m.type == "human"), "")
        numbers = re.findall(r"\d+(?:\.\d+)?", question.split("discount")[0])
        discount = re.search(r"discount (\d+(?:\.\d+)?)", question)
        args = {"prices": [float(n) for n in numbers], "discount_percent": float(discount.group(1)) if discount else 0.0}
        return AIMessage("", tool_calls=[{"name": "compute_total", "args": args, "id": f"call_{len(messages)}"}])
    value = float(results[-1].content)
    system = next((str(m.content) for m in messages if m.type == "system"), "")
    if call["temperature"] > 0.3:
        return AIMessage(f"About ${round(value)}, give or take.")
    if "two decimals" in system.lower():
        return AIMessage(f"Total: ${value:.2f}")
    return AIMessage(f"The total is {value}.")


def build_chain() -> tuple[Any, dict[str, Any]]:
    """A fresh cashier chain (new objects: the planted bug and wrong settings are back)."""
    tool = StructuredTool.from_function(compute_total)
    model = EchoChatModel(model_name="cashier-sim", temperature=0.9, reply=cashier_reply)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}"),
                                               MessagesPlaceholder("scratchpad", optional=True)])
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


def examples() -> list[dict[str, Any]]:
    baskets = [([12.5, 37.5], 10), ([20.0], 25), ([9.99, 5.01, 15.0], 0), ([100.0, 50.0], 20),
               ([3.5, 6.5], 50), ([80.0], 5)]
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


def build_demo() -> tuple[ChainTarget, list[Any], Callable[[Any, Any], Any]]:
    """``(target, trainset, feedback_fn)`` for ``opto demo`` and ``opto resume``."""
    chain, _ = build_chain()
    target = ChainTarget(chain, exclude=["*.max_tokens", "*.description", "prompt.human"], input_keys=["question"])
    return target, examples(), feedback


def scripted_fix() -> str:
    """The optimizer answer that fixes all three problems in one step (for tests and the example)."""
    return json.dumps({
        "reasoning": "compute_total treats discount_percent as a fraction, so 10 % removes 10 times the "
                     "subtotal; the answers are rounded because the temperature is high; the format is "
                     "not the one requested, so the system prompt must ask for it.",
        "suggestion": {"tools.compute_total.code": FIXED_COMPUTE_TOTAL, "prompt.system": FIXED_SYSTEM,
                       "model.temperature": 0.0},
    })
