"""The optimization loop, written once for every adapter.

One step: run a minibatch of training examples with tracing, get feedback on each output,
trace it back (`backward`), let the optimizer propose new values, apply them, evaluate, and
keep them only if the score did not get worse (otherwise roll back). The best values seen are
applied at the end. Budgets (steps, optimizer LLM calls, tokens, USD), a target score, a
``STOP`` file and Ctrl-C all end the run after a finished step, with everything saved in the
run directory, from which ``optimize(..., run_dir=same)`` resumes.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .backward import BackwardError, ProblemInstance, backward
from .feedback import Feedback
from .graph import Graph
from .optimizers.base import Optimizer, Proposal
from .rundir import RunDir
from .target import Target
from .usage import Usage

log = logging.getLogger("opto")

FeedbackFn = Callable[[Any, Any], Any]


class OptimizerFailed(RuntimeError):
    """The optimizer's step raised (an API error after its retries): the run stops, saved, resumable."""


class FeedbackError(RuntimeError):
    """The user's feedback function raised, or returned something that is not feedback."""


@dataclass
class Evaluation:
    """One example's run: its output, graph and feedback."""

    index: int
    output: Any
    graph: Graph
    feedback: Feedback
    failed: bool = False


@dataclass
class OptimizationResult:
    """What a run produced. The target holds ``best_values`` when `optimize` returns."""

    best_values: dict[str, Any]
    best_score: float | None
    initial_score: float | None
    history: list[dict[str, Any]]
    usage: dict[str, Any]
    run_dir: str | None
    stopped_reason: str
    steps: int = 0
    final_values: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def mean_score(evaluations: Sequence[Evaluation]) -> float | None:
    scores = [e.feedback.score for e in evaluations if e.feedback.score is not None]
    return sum(scores) / len(scores) if scores else None


def evaluate(target: Target, examples: Sequence[Any], feedback_fn: FeedbackFn, *, num_threads: int = 1,
             failure_score: float = 0.0, indices: Sequence[int] | None = None) -> list[Evaluation]:
    """Run every example (in ``num_threads`` threads) and collect its feedback, in order."""
    indices = list(indices) if indices is not None else list(range(len(examples)))

    def one(position: int) -> Evaluation:
        example = examples[position]
        output, graph = target.run(example)
        if isinstance(output, BaseException):
            text = f"The run raised {type(output).__name__}: {output}"
            return Evaluation(indices[position], output, graph, Feedback(failure_score, text), failed=True)
        try:
            raw = feedback_fn(example, output)
        except Exception as exc:
            raise FeedbackError(f"feedback_fn raised on example {indices[position]} ({_short(example)}): "
                                f"{type(exc).__name__}: {exc}") from exc
        try:
            feedback = Feedback.coerce(raw)
        except TypeError as exc:
            raise FeedbackError(f"feedback_fn returned {raw!r} for example {indices[position]} "
                                f"({_short(example)}): {exc}") from exc
        return Evaluation(indices[position], output, graph, feedback)

    if num_threads <= 1 or len(examples) <= 1:
        return [one(i) for i in range(len(examples))]
    with ThreadPoolExecutor(max_workers=min(num_threads, len(examples))) as pool:
        return list(pool.map(one, range(len(examples))))


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Interrupt:
    """Turns the first Ctrl-C into 'stop after this step' (main thread only); a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after the current step (press again to abort)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _values(target: Target) -> dict[str, Any]:
    return {p.name: p.value for p in target.parameters() if p.trainable}


def optimize(
    target: Target,
    trainset: Sequence[Any],
    feedback_fn: FeedbackFn,
    optimizer: Optimizer,
    valset: Sequence[Any] | None = None,
    *,
    max_steps: int = 5,
    batch_size: int = 4,
    num_threads: int = 1,
    max_llm_calls: int | None = None,
    max_tokens: int | None = None,
    max_cost_usd: float | None = None,
    target_score: float | None = None,
    run_dir: str | None = None,
    seed: int = 0,
    progress: bool = False,
    max_errors: int | None = None,
    failure_score: float = 0.0,
    follow: Sequence[str] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    recipe: str | None = None,
) -> OptimizationResult:
    """Optimize ``target``'s trainable parameters on ``trainset`` with ``optimizer``.

    ``feedback_fn(example, output)`` returns a float, a string, a ``(score, text)`` pair or a
    `Feedback` (higher scores are better). Steps are accepted when the score on ``valset`` (or,
    without one, on the step's training batch) does not drop. ``max_llm_calls``, ``max_tokens``
    and ``max_cost_usd`` bound the optimizer's own LLM use exactly (a retry is skipped when only
    one call is left). ``max_errors`` bounds failed runs (exceptions) over the whole run.
    ``recipe`` (``"module:function"`` returning target, trainset, feedback_fn, valset) is stored
    in the run directory so that ``opto resume`` can rebuild the run in a new process.
    """
    if not trainset:
        raise ValueError("optimize needs a non-empty trainset")
    if batch_size < 1 or max_steps < 0:
        raise ValueError("batch_size must be >= 1 and max_steps >= 0")
    parameters = target.parameters()
    if not any(p.trainable for p in parameters):
        raise ValueError("the target has no trainable parameter")
    optimizer.set_parameters(parameters)
    store = RunDir(run_dir) if run_dir else None
    usage = Usage()
    history: list[dict[str, Any]] = []
    errors = 0
    eval_set = list(valset) if valset else None
    backward_kwargs = {"follow": tuple(follow)} if follow else {}

    def score_of(examples: Sequence[Any], indices: Sequence[int] | None = None) -> tuple[float | None, list[Evaluation]]:
        nonlocal errors
        evaluations = evaluate(target, examples, feedback_fn, num_threads=num_threads, failure_score=failure_score,
                               indices=indices)
        errors += sum(e.failed for e in evaluations)
        return mean_score(evaluations), evaluations

    # ----- start or resume ------------------------------------------------------------------
    checkpoint = store.read_checkpoint() if store else None
    if checkpoint and checkpoint.get("done"):
        log.info("run directory %s holds a finished run; continuing it for more steps", run_dir)
    if checkpoint:
        target.apply(_validated(target, checkpoint["current"]))
        optimizer.set_parameters(target.parameters())
        optimizer.load_state_dict(checkpoint.get("optimizer", {}))
        usage = Usage.from_dict(checkpoint.get("usage", {}))
        start = int(checkpoint["step"])
        current_score = checkpoint.get("current_score")
        best_score = checkpoint.get("best_score")
        best_values = checkpoint["best"]
        initial_score = checkpoint.get("initial_score")
        errors = int(checkpoint.get("errors", 0))
        history = store.truncate_history(start) if store else []
        log.info("resuming %s after step %d", run_dir, start)
    else:
        start = 0
        if store:
            store.write_config({"max_steps": max_steps, "batch_size": batch_size, "num_threads": num_threads,
                                "max_llm_calls": max_llm_calls, "max_tokens": max_tokens,
                                "max_cost_usd": max_cost_usd, "target_score": target_score, "seed": seed,
                                "optimizer": type(optimizer).__name__,
                                "model": getattr(optimizer._llm, "model", None),
                                "base_url": str(getattr(optimizer._llm, "base_url", "") or "") or None,
                                "parameters": [p.spec() for p in parameters],
                                "trainset_size": len(trainset), "valset_size": len(valset or []),
                                "recipe": recipe})
        initial_score, evaluations = score_of(eval_set or list(trainset))
        current_score = best_score = initial_score
        best_values = _values(target)
        record = {"step": 0, "kind": "initial", "values": best_values, "eval_score": initial_score,
                  "best_score": best_score, "usage": usage.to_dict(), "time": time.time()}
        if store:
            record["graph"] = store.write_graph(0, evaluations[0].graph.to_json())
        history.append(record)
        if store:
            store.append_history(record)
            store.write_checkpoint(_checkpoint(0, target, best_values, best_score, current_score, initial_score,
                                               optimizer, usage, errors, "running"))

    stopped = "max_steps"
    error = ""
    last_step = start
    bar = _Progress(progress, max_steps, start)
    try:
        with _Interrupt() as interrupt:
            step = start
            while step < max_steps:
                reason = _budget_reason(usage, max_llm_calls, max_tokens, max_cost_usd)
                if reason is None and target_score is not None and best_score is not None and best_score >= target_score:
                    reason = "target_score"
                if reason is None and store and store.stop_requested:
                    reason = "stop_file"
                if reason is None and interrupt.requested:
                    reason = "interrupted"
                if reason is None and max_errors is not None and errors > max_errors:
                    reason = "max_errors"
                if reason:
                    stopped = reason
                    break
                try:
                    record = _one_step(step + 1, target, trainset, eval_set, optimizer, score_of, usage,
                                       current_score, batch_size, seed, max_llm_calls, backward_kwargs, store)
                except OptimizerFailed as exc:
                    log.error("%s; stopping. Everything up to step %d is saved; run again to resume.", exc, step)
                    stopped, error = "optimizer_error", str(exc)
                    break
                step += 1
                current_score = record["current_score"]
                last_step = step
                # without a validation set, scores of different batches do not compare: the last kept
                # values are the best known
                if record["kept"] and (eval_set is None or _better(current_score, best_score)):
                    best_score, best_values = current_score, _values(target)
                record["best_score"] = best_score
                record["errors_total"] = errors
                history.append(record)
                if store:
                    store.append_history(record)
                    store.write_checkpoint(_checkpoint(step, target, best_values, best_score, current_score,
                                                       initial_score, optimizer, usage, errors, "running"))
                bar.update(step, record, best_score, usage)
                if on_step:
                    on_step(record)
                if record.get("proposal", {}).get("terminated") and not record.get("proposal", {}).get("accepted"):
                    log.info("step %d: the optimizer proposed no change", step)
            else:
                stopped = "max_steps"
    finally:
        bar.close()
    # ----- finish: the best values stay in the target --------------------------------------------
    final_values = _values(target)
    if best_values != final_values:
        target.apply(_validated(target, best_values))
    if store:
        store.write_checkpoint(_checkpoint(last_step, target, best_values, best_score, current_score, initial_score, optimizer,
                                           usage, errors, stopped, done=True))
    return OptimizationResult(best_values, best_score, initial_score, history, usage.to_dict(),
                              str(store.path) if store else None, stopped, steps=len(history) - 1,
                              final_values=final_values, error=error)


def _validated(target: Target, values: dict[str, Any]) -> dict[str, Any]:
    """Values from a checkpoint pass validation again before they touch the framework."""
    by_name = {p.name: p for p in target.parameters()}
    unknown = set(values) - set(by_name)
    if unknown:
        raise ValueError(f"the checkpoint names parameters the target does not have: {sorted(unknown)}")
    return {name: by_name[name].validate(value) for name, value in values.items()}


def _better(new: float | None, old: float | None) -> bool:
    return old is None or (new is not None and new > old)


def _budget_reason(usage: Usage, calls: int | None, tokens: int | None, cost: float | None) -> str | None:
    if calls is not None and usage.calls >= calls:
        return "max_llm_calls"
    if tokens is not None and usage.total_tokens >= tokens:
        return "max_tokens"
    if cost is not None and usage.cost_usd >= cost:
        return "max_cost_usd"
    return None


def _one_step(step: int, target: Target, trainset: Sequence[Any], eval_set: list[Any] | None, optimizer: Optimizer,
              score_of: Callable[..., tuple[float | None, list[Evaluation]]], usage: Usage,
              current_score: float | None, batch_size: int, seed: int, max_llm_calls: int | None,
              backward_kwargs: dict[str, Any], store: RunDir | None) -> dict[str, Any]:
    started = time.time()
    rng = random.Random(f"{seed}:{step}")  # per step, so a resumed run samples the same batches
    indices = sorted(rng.sample(range(len(trainset)), min(batch_size, len(trainset))))
    batch = [trainset[i] for i in indices]
    batch_score, evaluations = score_of(batch, indices)
    instances: list[ProblemInstance] = []
    skipped: list[str] = []
    for evaluation in evaluations:
        try:
            instances.append(backward(evaluation.graph, evaluation.feedback, **backward_kwargs))
        except BackwardError as exc:
            skipped.append(f"example {evaluation.index}: {exc}")
    values_before = _values(target)
    record: dict[str, Any] = {"step": step, "kind": "step", "time": started, "batch": indices, "batch_score": batch_score,
                              "feedback": [e.feedback.to_dict() for e in evaluations], "values_before": values_before,
                              "skipped_examples": skipped}
    if store:
        record["graph"] = store.write_graph(step, evaluations[0].graph.to_json())
    if not instances:
        record.update(kept=False, current_score=current_score, eval_score=None, proposal=Proposal(
            error="no example could be traced back to a trainable parameter").to_dict(),
            usage=usage.to_dict(), seconds=time.time() - started)
        return record
    optimizer.set_parameters(target.parameters())
    retry = optimizer.retry_invalid
    if max_llm_calls is not None and max_llm_calls - usage.calls < 2:
        optimizer.retry_invalid = False  # one call left: a retry would break the budget
    try:
        proposal = optimizer.step(instances)
    except Exception as exc:  # the LLM is down, out of quota, ...: stop cleanly, resume later
        raise OptimizerFailed(f"step {step}: the optimizer failed: {type(exc).__name__}: {exc}") from exc
    finally:
        optimizer.retry_invalid = retry
    usage.merge(proposal.usage)
    record["proposal"] = proposal.to_dict()
    changes = {k: v for k, v in proposal.accepted.items() if values_before.get(k) != v}
    if not changes:
        record.update(kept=False, current_score=current_score, eval_score=None, values_after=values_before,
                      usage=usage.to_dict(), seconds=time.time() - started)
        return record
    snapshot = target.snapshot()
    try:
        target.apply(changes)
    except Exception as exc:  # an adapter refused a value validation could not foresee
        target.restore(snapshot)
        record["proposal"]["apply_error"] = f"{type(exc).__name__}: {exc}"
        record.update(kept=False, current_score=current_score, eval_score=None, values_after=values_before,
                      usage=usage.to_dict(), seconds=time.time() - started)
        return record
    if eval_set is not None:
        new_score, _ = score_of(eval_set)
        baseline = current_score
    else:  # no validation set: compare on the step's own batch, before and after
        new_score, _ = score_of(batch, indices)
        baseline = batch_score
    kept = new_score is None or baseline is None or new_score >= baseline
    if kept:
        current = new_score
    else:
        target.restore(snapshot)
        current = current_score
    record.update(kept=kept, eval_score=new_score, current_score=current, values_after=_values(target),
                  usage=usage.to_dict(), seconds=time.time() - started)
    return record


def _checkpoint(step: int, target: Target, best_values: dict[str, Any], best_score: float | None,
                current_score: float | None, initial_score: float | None, optimizer: Optimizer, usage: Usage,
                errors: int, status: str, done: bool = False) -> dict[str, Any]:
    return {"step": step, "current": _values(target), "best": best_values, "best_score": best_score,
            "current_score": current_score, "initial_score": initial_score, "optimizer": optimizer.state_dict(),
            "usage": usage.to_dict(), "errors": errors, "status": status, "done": done, "time": time.time()}


class _Progress:
    """A rich progress bar: step, score, best score, tokens and cost (off unless asked for)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]opto"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        self.progress.start()
        self.task = self.progress.add_task("steps", total=total, completed=start, info="")

    def update(self, step: int, record: dict[str, Any], best: float | None, usage: Usage) -> None:
        if self.progress is None:
            return
        score = record.get("current_score")
        info = (f"score {_fmt(score)} best {_fmt(best)} | {usage.total_tokens} tok"
                + (f" ${usage.cost_usd:.4f}" if usage.cost_usd else ""))
        self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"
