"""Running Trace's own OptoPrime (``trace-opt``, import name ``opto``) on our plain-Python tasks.

Trace 0.1.3.8 has no training loop that takes a budget, and its OpenAI-compatible client
(``CustomLLM``) raises ``NameError`` when given a model name. So this module supplies both,
kept as close as possible to our loop for a fair comparison: the same minibatches (same seed
and sampling per step), the same acceptance rule (keep a step when the validation score does
not drop, else roll back), and the same chat client (`TraceChatLLM` routes trace-opt's
``llm(messages=..., response_format=..., max_tokens=...)`` calls to an opto_core chat model).
A minibatch's outputs are joined by one bundled op and get one combined feedback text, the
documented workaround for trace-opt's "same feedback for all children" assertion.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Sequence

from opto_core.kernel.feedback import Feedback

from .models import BudgetExhausted


def available() -> str | None:
    """None when trace-opt can be used, else the reason it cannot."""
    quiet_litellm()
    try:
        import opto.optimizers  # noqa: F401  (slow: pulls in litellm)
        from opto import trace  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"trace-opt is not installed ({type(exc).__name__}: {exc}); pip install trace-opt==0.1.3.8"
    return None


def quiet_litellm() -> None:
    """trace-opt imports LiteLLM, which fetches a price table from GitHub at import unless told not to:
    nothing may download at run time (and without network the retries cost seconds)."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def batch_outputs(*outputs: Any) -> str:
    """Collect the outputs of the runs of one minibatch, one per line."""
    return "\n".join(str(o) for o in outputs)


class TraceProgram:
    """A trace-opt program: ``forward(example) -> Node`` and its trainable ``ParameterNode``s."""

    def __init__(
        self,
        forward: Callable[[Any], Any],
        parameters: list[Any],
        postprocess: Callable[[dict[Any, Any]], dict[Any, Any]] | None = None,
    ) -> None:
        self.forward = forward
        self.parameters = parameters
        self.postprocess = postprocess

    def run(self, example: Any) -> tuple[Any, Any]:
        """``(node, output)``: the output node (or the exception node) and the plain output (or the exception)."""
        from opto.trace import ExecutionError

        try:
            node = self.forward(example)
        except ExecutionError as exc:
            node = exc.exception_node
            return node, RuntimeError(str(node.data))
        except Exception as exc:  # raised outside any bundle
            return None, exc
        return node, node.data

    def values(self) -> list[Any]:
        return [copy.deepcopy(p._data) for p in self.parameters]

    def set_values(self, values: list[Any]) -> None:
        for parameter, value in zip(self.parameters, values):
            parameter._data = copy.deepcopy(value)


class TraceChatLLM:
    """trace-opt's LLM interface (an ``AbstractModel`` look-alike) on an opto_core chat model."""

    def __init__(self, chat: Any) -> None:
        self.chat = chat

    def __call__(
        self, messages: list[dict[str, str]], response_format: Any = None, max_tokens: int | None = None, **_: Any
    ) -> Any:
        schema = {"type": "object"} if response_format else None
        result = self.chat.chat(messages, json_schema=schema, max_tokens=max_tokens)
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=result.text))])


@dataclass
class TraceResult:
    initial_score: float | None
    best_score: float | None
    steps: int
    stopped_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)


def evaluate(
    program: TraceProgram, examples: Sequence[Any], feedback_fn: Callable[[Any, Any], Any], failure_score: float = 0.0
) -> tuple[float | None, list[Feedback]]:
    """Mean score of ``examples`` (runs one at a time: trace-opt 0.1.3.8 is not thread-safe)."""
    feedbacks = []
    for example in examples:
        _, output = program.run(example)
        if isinstance(output, BaseException):
            feedbacks.append(Feedback(failure_score, f"The run raised {type(output).__name__}: {output}"))
        else:
            feedbacks.append(Feedback.coerce(feedback_fn(example, output)))
    scores = [f.score for f in feedbacks if f.score is not None]
    return (sum(scores) / len(scores) if scores else None), feedbacks


def optimize(
    program: TraceProgram,
    trainset: Sequence[Any],
    feedback_fn: Callable[[Any, Any], Any],
    chat: Any,
    valset: Sequence[Any] | None = None,
    *,
    max_steps: int = 5,
    batch_size: int = 4,
    max_llm_calls: int | None = None,
    seed: int = 0,
    memory_size: int = 5,
    max_answer_tokens: int = 4096,
    failure_score: float = 0.0,
) -> TraceResult:
    """Trace's OptoPrime in our loop's shape. ``chat`` should be a `BudgetedChat` (it enforces the cap)."""
    from opto import trace
    from opto.optimizers import OptoPrime

    optimizer = OptoPrime(
        program.parameters, llm=TraceChatLLM(chat), memory_size=memory_size, max_tokens=max_answer_tokens
    )
    join = trace.bundle()(batch_outputs)
    eval_set = list(valset) if valset else None
    current, _ = evaluate(program, eval_set or list(trainset), feedback_fn, failure_score)
    initial = best = current
    best_values = program.values()
    history: list[dict[str, Any]] = []
    stopped = "max_steps"
    calls = lambda: chat.usage.calls  # noqa: E731
    for step in range(1, max_steps + 1):
        if max_llm_calls is not None and calls() >= max_llm_calls:
            stopped = "max_llm_calls"
            break
        started = time.time()
        rng = random.Random(f"{seed}:{step}")  # the same batches as opto_core.engine.loop
        indices = sorted(rng.sample(range(len(trainset)), min(batch_size, len(trainset))))
        nodes, texts, scores = [], [], []
        for i in indices:
            node, output = program.run(trainset[i])
            if isinstance(output, BaseException):
                fb = Feedback(failure_score, f"The run raised {type(output).__name__}: {output}")
            else:
                fb = Feedback.coerce(feedback_fn(trainset[i], output))
            scores.append(fb.score)
            if node is not None:
                nodes.append(node)
                texts.append(fb.text or f"score {fb.score}")
        batch_score = sum(s for s in scores if s is not None) / max(1, len(scores))
        record: dict[str, Any] = {"step": step, "batch": indices, "batch_score": batch_score}
        if not nodes:
            record.update(kept=False, error="no run produced a node")
            history.append(record)
            continue
        target = nodes[0] if len(nodes) == 1 else join(*nodes)
        text = texts[0] if len(texts) == 1 else "\n".join(f"Example {k + 1}: {t}" for k, t in enumerate(texts))
        optimizer.zero_feedback()
        optimizer.backward(target, text)
        before = program.values()
        try:
            update = optimizer.propose()
        except BudgetExhausted:
            stopped = "max_llm_calls"
            break
        except Exception as exc:  # trace-opt's own failure (e.g. its assertions on shared parameters)
            record.update(kept=False, error=f"{type(exc).__name__}: {exc}")
            history.append(record)
            continue
        if program.postprocess and update:
            update = program.postprocess(update)
        optimizer.update(update)
        record["changed"] = [getattr(p, "py_name", str(p)) for p in update]
        if not update or program.values() == before:
            record.update(kept=False, seconds=time.time() - started)
            history.append(record)
            continue
        if eval_set is not None:
            new, _ = evaluate(program, eval_set, feedback_fn, failure_score)
            baseline = current
        else:
            new, _ = evaluate(program, [trainset[i] for i in indices], feedback_fn, failure_score)
            baseline = batch_score
        kept = new is None or baseline is None or new >= baseline
        if kept:
            current = new
            if eval_set is None or best is None or (new is not None and new > best):
                best, best_values = new, program.values()
        else:
            program.set_values(before)
        record.update(kept=kept, eval_score=new, seconds=time.time() - started)
        history.append(record)
    else:
        stopped = "max_steps"
    program.set_values(best_values)
    return TraceResult(initial, best, len(history), stopped, history)
