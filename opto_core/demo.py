"""The demo workflows behind ``opto demo``, and the recipes that let ``opto resume`` rebuild them.

A *recipe* is ``"module:function"``; the function returns ``(target, trainset, feedback_fn,
valset)``. The plain-Python demo below needs no framework: an invoice workflow whose price
parser has a planted bug (it drops the cents) and whose discount rate is wrong. Both are
visible in the trace, and the feedback says what the total should have been.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import Any, Callable

from .feedback import Feedback
from .parameters import Parameter
from .trace import FunctionTarget, op

Recipe = Callable[[], tuple[Any, list[Any], Callable[[Any, Any], Any], list[Any] | None]]


@op(trainable=True, parameter_name="invoice.parse_price.code")
def parse_price(line: str) -> float:
    """Read the amount in dollars from a line such as 'Total: $12.50'."""
    amount = line.split("$")[1]
    return float(amount.split(".")[0])


@op
def apply_discount(price: float, rate: float) -> float:
    """The price after a discount of `rate` (0.1 means 10% off), rounded to cents."""
    return round(price * (1 - rate), 2)


DISCOUNT = Parameter("invoice.discount_rate", "float", 0.5, lower=0.0, upper=0.9,
                     description="the store's discount rate (a fraction)")


def invoice_workflow(line: str) -> float:
    return apply_discount(parse_price(line), DISCOUNT)


def _invoice_examples() -> list[dict[str, Any]]:
    amounts = [12.50, 99.99, 5.25, 40.00, 18.75, 7.10, 63.30, 120.45]
    return [{"line": f"Item {i}: total ${amount:.2f}", "expected": round(amount * 0.9, 2)}
            for i, amount in enumerate(amounts)]


def invoice_feedback(example: dict[str, Any], output: float) -> Feedback:
    expected = example["expected"]
    error = abs(output - expected)
    if error < 0.005:
        return Feedback(1.0, "Correct.")
    return Feedback(max(0.0, 1.0 - error / expected),
                    f"For {example['line']!r} the discounted total should be {expected:.2f} (10% off), got {output:.2f}.")


def build_python_demo() -> tuple[FunctionTarget, list[Any], Callable[[Any, Any], Any], list[Any]]:
    """The plain-Python invoice demo, with its planted bug and wrong rate reset."""
    DISCOUNT.value = 0.5
    parse_price.code.value = parse_price.source  # type: ignore[union-attr]
    examples = _invoice_examples()
    target = FunctionTarget(invoice_workflow, [DISCOUNT, parse_price], input_keys=["line"])
    return target, examples[:5], invoice_feedback, examples[5:]


DEMOS: dict[str, tuple[str, str]] = {
    # name -> (recipe, the module whose presence makes it available)
    "python": ("opto_core.demo:build_python_demo", "opto_core"),
    "langchain": ("opto_adapters.langchain.demo:build_demo", "langchain_core"),
    "dspy": ("opto_adapters.dspy.demo:build_demo", "dspy"),
    "autogen": ("opto_adapters.autogen.demo:build_demo", "autogen_agentchat"),
}


def available_demos() -> list[str]:
    names = []
    for name, (recipe, requirement) in DEMOS.items():
        module = recipe.split(":")[0]
        if find_spec(requirement) is not None and _module_exists(module):
            names.append(name)
    return names


def _module_exists(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def choose_demo(name: str = "auto") -> str:
    """``auto`` picks the LangChain demo when LangChain is installed, else plain Python."""
    available = available_demos()
    if name == "auto":
        return "langchain" if "langchain" in available else "python"
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    if name not in available:
        raise ValueError(f"the {name} demo needs its extra: pip install 'opto-adapters[{name}]'")
    return name


def load_recipe(recipe: str) -> tuple[Any, list[Any], Callable[[Any, Any], Any], list[Any] | None]:
    """Build ``(target, trainset, feedback_fn, valset)`` from ``"module:function"``."""
    module, _, function = recipe.partition(":")
    if not function:
        raise ValueError(f"a recipe is 'module:function', got {recipe!r}")
    built = getattr(import_module(module), function)()
    if len(built) == 3:
        return (*built, None)
    return built
