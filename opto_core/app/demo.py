"""The demo workflows behind ``opto demo``, and the recipes that let ``opto resume`` rebuild them.

A *recipe* is ``"module:function"``; the function returns ``(target, trainset, feedback_fn,
valset)``. Demos live in a registry: the plain-Python one is built in, adapters add theirs
through the ``opto_adapters.demos`` entry points (or `register_demo`). ``opto resume`` imports
only a registered recipe, or one the user passes explicitly (``--recipe module:function``):
a run directory is data, and data must not choose which code runs. The plain-Python demo below needs no framework: an invoice workflow whose price
parser has a planted bug (it drops the cents) and whose discount rate is wrong. Both are
visible in the trace, and the feedback says what the total should have been.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from typing import Any, Callable

from opto_core.engine.target import FunctionTarget
from opto_core.kernel.feedback import Feedback
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.trace import op

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


DISCOUNT = Parameter(
    "invoice.discount_rate", "float", 0.5, lower=0.0, upper=0.9, description="the store's discount rate (a fraction)"
)


def invoice_workflow(line: str) -> float:
    return apply_discount(parse_price(line), DISCOUNT)


def _invoice_examples() -> list[dict[str, Any]]:
    amounts = [12.50, 99.99, 5.25, 40.00, 18.75, 7.10, 63.30, 120.45]
    return [
        {"line": f"Item {i}: total ${amount:.2f}", "expected": round(amount * 0.9, 2)}
        for i, amount in enumerate(amounts)
    ]


def invoice_feedback(example: dict[str, Any], output: float) -> Feedback:
    expected = example["expected"]
    error = abs(output - expected)
    if error < 0.005:
        return Feedback(1.0, "Correct.")
    return Feedback(
        max(0.0, 1.0 - error / expected),
        f"For {example['line']!r} the discounted total should be {expected:.2f} (10% off), got {output:.2f}.",
    )


def build_python_demo() -> tuple[FunctionTarget, list[Any], Callable[[Any, Any], Any], list[Any]]:
    """The plain-Python invoice demo, with its planted bug and wrong rate reset."""
    DISCOUNT.value = 0.5
    code = parse_price.code
    if code is not None:  # always: the op is trainable
        code.value = parse_price.source
    examples = _invoice_examples()
    target = FunctionTarget(invoice_workflow, [DISCOUNT, parse_price], input_keys=["line"])
    return target, examples[:5], invoice_feedback, examples[5:]


@dataclass(frozen=True)
class Demo:
    """A registered demo: its name, its recipe, and the module whose presence makes it available."""

    name: str
    recipe: str
    requires: str = ""


#: Entry-point group where adapters register their demos: ``name = "module:function"``.
ENTRY_POINT_GROUP = "opto_adapters.demos"
_REGISTERED: dict[str, Demo] = {"python": Demo("python", "opto_core.app.demo:build_python_demo", "opto_core")}


def register_demo(name: str, recipe: str, requires: str = "") -> None:
    """Make ``recipe`` (``"module:function"``) available as ``opto demo --workflow NAME`` and to
    ``opto resume``. ``requires`` names a module that must be importable (the framework)."""
    _split(recipe)
    _REGISTERED[name] = Demo(name, recipe, requires)


def registered_demos() -> dict[str, Demo]:
    """Every registered demo: the built-in one, those registered by `register_demo`, and those
    adapters declare under the ``opto_adapters.demos`` entry points."""
    from importlib.metadata import entry_points

    found = dict(_REGISTERED)
    points = list(entry_points(group=ENTRY_POINT_GROUP))
    declared = {point.name: point.value for point in points}
    for name, recipe in declared.items():
        found.setdefault(name, Demo(name, recipe.split("[")[0].strip()))
    return found


def _split(recipe: str) -> tuple[str, str]:
    module, _, function = recipe.partition(":")
    if (
        not module
        or not function
        or not all(part.isidentifier() for part in (*module.split("."), *function.split(".")))
    ):
        raise ValueError(f"a recipe is 'module:function', got {recipe!r}")
    return module, function


def available_demos() -> list[str]:
    return [name for name, demo in registered_demos().items() if _available(demo)]


def _available(demo: Demo) -> bool:
    module = demo.recipe.split(":")[0]
    try:
        return (not demo.requires or find_spec(demo.requires) is not None) and find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import: its framework is missing
        return False


def choose_demo(name: str = "auto") -> str:
    """``auto`` picks the LangChain demo when LangChain is installed, else plain Python."""
    available = available_demos()
    if name == "auto":
        return "langchain" if "langchain" in available else "python"
    demos = registered_demos()
    if name not in demos:
        raise ValueError(f"unknown demo {name!r}; choose from {', '.join(demos)}")
    if name not in available:
        raise ValueError(f"the {name} demo needs its extra: pip install 'opto-adapters[{name}]'")
    return name


def recipe_of(name: str) -> str:
    return registered_demos()[name].recipe


def is_registered_recipe(recipe: str) -> bool:
    """Whether ``recipe`` is the recipe of a registered demo (what `opto resume` may import unasked)."""
    return any(demo.recipe == recipe for demo in registered_demos().values())


def load_recipe(recipe: str) -> tuple[Any, list[Any], Callable[[Any, Any], Any], list[Any] | None]:
    """Build ``(target, trainset, feedback_fn, valset)`` from ``"module:function"``.

    Imports the module: call it only with a registered recipe or one the user named explicitly.
    """
    module, function = _split(recipe)
    built: Any = import_module(module)
    for part in function.split("."):
        built = getattr(built, part)
    result = built()
    if not isinstance(result, tuple) or len(result) not in (3, 4):
        raise ValueError(
            f"recipe {recipe} must return (target, trainset, feedback_fn[, valset]), got {type(result).__name__}"
        )
    if len(result) == 3:
        return (*result, None)
    return result


def recipe_target(recipe: str) -> Any:
    """The target ``recipe`` builds: ``functools.partial(recipe_target, recipe)`` is a picklable target factory
    (what a sandboxed worker, a fresh interpreter, builds the workflow from)."""
    return load_recipe(recipe)[0]
