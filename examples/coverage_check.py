"""Which parameters can feedback reach? The coverage check on a small support workflow.

Run it: ``python examples/coverage_check.py`` (offline; the optimizer model is scripted and is never
called, because ``require_coverage=True`` stops the run before any optimizer call).

The workflow has three trainable parameters, and feedback reaches only one of them:

- ``support.system``, a template the model call fills in (``{company}``): on the path to the answer;
- ``support.signature``, read outside any traced step (the step gets a plain string): its value is
  never seen in any call;
- ``pricing.discount``, used by a step whose result the answer does not depend on: off the path.
"""

from opto_core import CoverageError, FunctionTarget, OptoPrime, Parameter, coverage, op, optimize
from opto_core.testing import ScriptedLLM

system = Parameter(
    "support.system", "text", "You are the support agent of {company}. Answer in one line.", template=True
)
signature = Parameter("support.signature", "text", "Sign every answer as Bob from the support team.")
discount = Parameter("pricing.discount", "float", 0.1, lower=0.0, upper=0.5)


@op
def answer(system, question, company, signoff):
    """The model call (offline here): the filled-in system prompt, the question and the sign-off."""
    return f"[{system.format(company=company)}] {question.strip().capitalize()} {signoff}"


@op
def price(amount, discount):
    """The discounted price of the order."""
    return round(amount * (1 - discount), 2)


def support(question, amount):
    signoff = signature.value.lower()  # read outside any step: `answer` receives a plain string
    reply = answer(system, question, "Acme", signoff)
    price(amount, discount)  # computed, but the reply does not use it
    return reply


EXAMPLES = [{"question": "where is my order?", "amount": 20.0}, {"question": "can I get a refund?", "amount": 8.5}]

if __name__ == "__main__":
    target = FunctionTarget(support, [system, signature, discount])
    print(coverage(target, EXAMPLES))
    print()
    optimizer = OptoPrime(target.parameters(), ScriptedLLM([]))  # no reply scripted: a call would fail
    try:
        optimize(target, EXAMPLES, lambda example, output: 0.0, optimizer, require_coverage=True)
    except CoverageError as exc:
        print(f"CoverageError: {exc}")
