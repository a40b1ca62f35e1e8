"""Every optimizer on every task, with the same model, temperature and budget of optimizer LLM calls.

    python -m bench.compare --tasks boolean_expressions,numeric --optimizers opto,opro,trace,copro \\
        --base-url http://127.0.0.1:8765/v1 --model M --budget-calls 10 [--quick] [--json] [--out DIR]

Optimizers (a row is made for each task that has the version of the workflow it needs):

| name | what | runs on |
|---|---|---|
| ``opto`` | our OptoPrime (trace, memory) through ``opto_core.engine.loop.optimize`` | plain Python, or a framework workflow through its adapter |
| ``opto-notrace`` | the ablation: our OptoPrime without the trace | same |
| ``opro`` | our scalar-only baseline (past values and scores) | same |
| ``trace`` | Trace's own OptoPrime (trace-opt 0.1.3.8) in a loop of the same shape | plain Python (trace-opt bundles) |
| ``opto-dspy`` | ours through ``opto_adapters.dspy.OptoTeleprompter`` | DSPy programs |
| ``copro`` / ``mipro`` / ``gepa`` | ``dspy.COPRO``, ``dspy.MIPROv2`` (light), ``dspy.GEPA``, through their own APIs | DSPy programs |

How the budget of N optimizer LLM calls maps (see `BUDGET_NOTES`): every optimizer's LLM is the
same client wrapped in a counting `BudgetedChat` with a hard cap of N (a call past N is refused,
so no row can exceed N), and the same forced temperature. Ours stop exactly at N
(``max_llm_calls``); trace-opt stops at the cap; COPRO's breadth and depth, MIPROv2's
candidates and GEPA's stopper are derived from N so that they plan to stay within it. The
workflow's own LLM calls (the task model) are not part of the budget; they are reported as
``task_calls``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import json
import logging
import math
import os
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.convergence import CountingTarget, aggregate, best_curve, format_aggregate, summarize
from bench.convergence import plot as plot_convergence
from bench.tasks import TaskInstance, get_task, task_names
from bench.tasks.models import BudgetedChat, BudgetExhausted, make_dspy_lm

log = logging.getLogger("bench.compare")

OPTIMIZERS: dict[str, str] = {
    "opto": "ours: OptoPrime with the trace",
    "opto-notrace": "ours: OptoPrime without the trace (ablation)",
    "opro": "ours: scalar-only baseline (OPRO-style)",
    "trace": "Trace's OptoPrime (trace-opt 0.1.3.8)",
    "opto-dspy": "ours through the DSPy adapter (OptoTeleprompter)",
    "copro": "dspy.COPRO",
    "mipro": "dspy.MIPROv2 (auto=light)",
    "gepa": "dspy.GEPA",
    "hybrid": "ours: Hybrid (OptoPrime for text/code, Optuna TPE for numbers)",
    "tpe": "search only: Optuna TPE",
    "gp": "search only: Gaussian-process Bayesian optimization (bayesian-optimization)",
    "pso": "search only: particle swarm (nevergrad)",
    "cmaes": "search only: CMA-ES (Optuna over the cmaes package)",
    "random": "search only: uniform random (Optuna)",
}
SEARCH = ("tpe", "gp", "pso", "cmaes", "random")
OURS = ("opto", "opto-notrace", "opro", "hybrid") + SEARCH
DSPY = ("opto-dspy", "copro", "mipro", "gepa")
QUICK_TASKS = ["boolean_expressions", "object_counting", "numeric", "workflow_python", "workflow_dspy"]

BUDGET_NOTES = {
    "opto": "exact: opto_core.engine.loop stops at max_llm_calls=N (a retry is skipped when one call is left)",
    "opto-notrace": "exact: as opto",
    "opro": "exact: as opto",
    "hybrid": "exact: as opto (one LLM call a step, none when no text/code parameter); --budget-evals: exact runs",
    **dict.fromkeys(
        SEARCH, "no LLM; --budget-evals N: exactly N workflow runs (opto_core.engine.loop max_evaluations)"
    ),
    "opto-dspy": "exact if the teleprompter passes max_llm_calls to the loop; hard cap N in any case",
    "trace": "hard cap: trace-opt has no budget; the counting client refuses call N+1 and the loop stops",
    "copro": "planned: breadth b and depth d with P*((b-1) + (d-1)*b) <= N (one call per candidate; DSPy's JSON "
    "fallback adds a call per reply that does not parse); hard cap N",
    "mipro": "planned: auto=light when its proposer calls fit in N, else auto=None with fewer candidates (DSPy's JSON "
    "fallback adds a call per reply that does not parse); hard cap N",
    "gepa": "stopper: GEPA stops before an iteration once N reflection calls are made (one per iteration); hard cap N",
}


@dataclass
class Settings:
    """Everything that must be the same for every optimizer in a table."""

    budget_calls: int = 10
    temperature: float = 1.0  # of every optimizer LLM call (the task model always runs at 0)
    answer_tokens: int = 2048  # max tokens of an optimizer answer
    task_max_tokens: int = 512
    batch_size: int = 4
    threads: int = 1
    seed: int = 0
    max_steps: int | None = None  # default: 2 * budget_calls
    memory_size: int = 5
    copro_breadth: int = 0  # 0: derived from the budget
    dspy_module: str = "predict"
    dspy_json_fallback: bool = True  # DSPy's default: a second call (JSONAdapter) when a reply does not parse
    quick: bool = False
    budget_evals: int | None = None  # workflow runs per row (the loop's max_evaluations); curves when set
    seeds: int = 1  # rows per (task, optimizer): seeds seed, seed+1, ...

    @property
    def steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return self.budget_evals if self.budget_evals is not None else 2 * self.budget_calls


class NotAvailable(RuntimeError):
    """This optimizer cannot run here (a package or an adapter is missing); the row says why."""


# ----- one row ------------------------------------------------------------------------------------------
def applicable(task: TaskInstance, optimizer: str) -> bool:
    if optimizer in OURS:
        return task.python_target is not None or task.framework_workflow is not None
    if optimizer == "trace":
        return task.trace_program is not None
    if optimizer in DSPY:
        return task.dspy is not None
    raise KeyError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")


def run_row(
    task: TaskInstance, optimizer: str, task_chat: Any, optimizer_chat: Any, settings: Settings
) -> dict[str, Any]:
    """Run one optimizer on one task; return the table row (never raises for an optimizer's failure)."""
    budgeted = BudgetedChat(
        optimizer_chat,
        max_calls=settings.budget_calls,
        temperature=settings.temperature,
        force_temperature=True,
        max_tokens=settings.answer_tokens,
        label=optimizer,
    )
    task_counter = BudgetedChat(task_chat, label="task")
    row: dict[str, Any] = {
        "task": task.name,
        "family": task.family,
        "optimizer": optimizer,
        "metric": task.metric,
        "lower_is_better": task.lower_is_better,
        "budget_calls": settings.budget_calls,
        "budget_note": BUDGET_NOTES[optimizer],
        "status": "ok",
        "reason": "",
        "before": None,
        "after": None,
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "tokens": 0,
        "cost_usd": 0.0,
        "seconds": None,
        "task_calls": 0,
        "refused_calls": 0,
        "stopped_reason": None,
        "details": {},
    }
    try:
        runner = {"trace": _run_trace}.get(optimizer) or (_run_ours if optimizer in OURS else _run_dspy)
        runner(task, optimizer, task_counter, budgeted, settings, row)
    except NotAvailable as exc:
        row.update(status="not available", reason=str(exc))
    except Exception as exc:
        if not _budget_exhausted(exc):
            _fail(row, optimizer, task, exc)
        else:  # the optimizer wanted more calls than planned and could not finish without them
            row.update(
                status="ran out of budget", reason=f"{type(exc).__name__}: {exc}. " + OVER_BUDGET.get(optimizer, "")
            )
            row["details"]["traceback"] = traceback.format_exc(limit=8)
    started = row.pop("_started", None)
    if row["seconds"] is None and started is not None:
        row["seconds"] = round(time.time() - started, 3)
    usage = budgeted.usage
    row.update(
        calls=usage.calls,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tokens=usage.total_tokens,
        cost_usd=round(usage.cost_usd, 6),
        refused_calls=budgeted.refused,
    )
    row["task_calls"] = task_counter.usage.calls - row.pop("_task_calls_eval", 0)
    if row["calls"] > settings.budget_calls:  # cannot happen through BudgetedChat; checked anyway
        row.update(status="error", reason=f"budget broken: {row['calls']} > {settings.budget_calls} calls")
    return row


#: How a run may end and still count as finished (status ``ok``): its budget or its target.
FINISHED = ("max_steps", "max_llm_calls", "max_tokens", "max_cost_usd", "target_score", "budget", "max_evaluations")


def _ended(row: dict[str, Any], stopped_reason: str, error: str, proposals: int) -> None:
    """Status from how the run ended: ``ok`` only at its budget or target, else ``stopped`` with the
    loop's reason (an optimizer or API error); ``proposals`` counts steps that proposed a value."""
    row["stopped_reason"] = stopped_reason
    row["proposals"] = proposals
    if stopped_reason not in FINISHED:
        row.update(status="stopped", reason=f"{stopped_reason}: {error}" if error else stopped_reason)
    if not proposals:
        row["reason"] = (row["reason"] + "; " if row["reason"] else "") + "never proposed anything"


OVER_BUDGET = {
    "copro": "COPRO's plan counts one call per candidate; DSPy's ChatAdapter makes a second call (JSONAdapter) "
    "when a reply does not parse, so a model that often breaks the format needs more (see "
    "--dspy-no-json-fallback).",
    "mipro": "MIPROv2's plan counts its proposer's calls; DSPy's ChatAdapter makes a second call (JSONAdapter) "
    "when a reply does not parse (see --dspy-no-json-fallback).",
}


def _budget_exhausted(exc: BaseException) -> bool:
    """True when the counting client's cap is what ended the run (DSPy wraps our exception)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BudgetExhausted) or "LLM calls used up" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _fail(row: dict[str, Any], optimizer: str, task: TaskInstance, exc: BaseException) -> None:
    """An optimizer crashed: the row says how, and the table goes on."""
    row.update(status="error", reason=f"{type(exc).__name__}: {exc}")
    row["details"]["traceback"] = traceback.format_exc(limit=8)
    log.warning("%s on %s failed: %s", optimizer, task.name, row["reason"])


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ----- ours ---------------------------------------------------------------------------------------------
def _make_ours(optimizer: str, parameters: Any, chat: Any, settings: Settings) -> Any:
    from opto_core.optimizers.hybrid import Hybrid
    from opto_core.optimizers.opro import OPRO
    from opto_core.optimizers.optoprime import OptoPrime, OptoPrimeNoTrace
    from opto_core.optimizers.search import Search

    if optimizer in SEARCH:
        return Search(parameters, optimizer, seed=settings.seed)
    kwargs = {"temperature": settings.temperature, "max_answer_tokens": settings.answer_tokens}
    if optimizer == "hybrid":
        return Hybrid(parameters, chat, seed=settings.seed, memory_size=settings.memory_size, **kwargs)
    if optimizer == "opro":
        return OPRO(parameters, chat, **kwargs)
    cls = OptoPrimeNoTrace if optimizer == "opto-notrace" else OptoPrime
    return cls(parameters, chat, memory_size=settings.memory_size, **kwargs)


def _run_ours(
    task: TaskInstance,
    optimizer: str,
    task_chat: BudgetedChat,
    chat: BudgetedChat,
    settings: Settings,
    row: dict[str, Any],
) -> None:
    from opto_core.engine.loop import evaluate, mean_score, optimize

    if task.python_target is not None:
        target = task.python_target(task_chat)
        row["version"] = "python"
    else:
        from bench.tasks.workflows import AdapterUnavailable, framework_available, framework_target

        assert task.framework is not None and task.framework_workflow is not None
        missing = framework_available(task.framework)
        if missing:
            raise NotAvailable(missing)
        try:
            target = framework_target(task.framework_workflow())
        except AdapterUnavailable as exc:
            raise NotAvailable(str(exc)) from exc
        row["version"] = task.framework

    def test_score() -> float | None:
        before_calls = task_chat.usage.calls
        evaluations = evaluate(
            target, task.testset, task.feedback, num_threads=settings.threads, failure_score=task.failure_score
        )
        row["_task_calls_eval"] = row.get("_task_calls_eval", 0) + task_chat.usage.calls - before_calls
        return task.to_metric(mean_score(evaluations))

    row["before"] = test_score()
    try:
        opt = _make_ours(optimizer, target.parameters(), chat, settings)
    except (ImportError, ValueError) as exc:  # a sampler's library is missing, or nothing it can search
        raise NotAvailable(str(exc)) from exc
    counted = CountingTarget(target, task.score)
    # with a budget of runs, a run is never repeated for values it already scored (the loop's cache)
    budget = (
        {} if settings.budget_evals is None else {"max_evaluations": settings.budget_evals, "reuse_evaluations": True}
    )
    started = time.time()
    row["_started"] = started
    result = optimize(
        counted,
        task.trainset,
        task.feedback,
        opt,
        task.valset or None,
        max_steps=settings.steps,
        batch_size=settings.batch_size,
        num_threads=settings.threads,
        max_llm_calls=settings.budget_calls,
        seed=settings.seed,
        failure_score=task.failure_score,
        **budget,
    )
    row["seconds"] = round(time.time() - started, 3)
    _record_curve(row, task, counted.scores)
    row["after"] = test_score()
    row["details"].update(
        steps=result.steps,
        best_val=task.to_metric(result.best_score),
        initial_val=task.to_metric(result.initial_score),
        kept_steps=sum(1 for h in result.history if h.get("kept")),
        loop_usage=result.usage,
        best_values=_short_values(result.best_values),
    )
    _ended(
        row,
        result.stopped_reason,
        getattr(result, "error", ""),
        sum(1 for h in result.history if (h.get("proposal") or {}).get("accepted")),
    )


def _record_curve(row: dict[str, Any], task: TaskInstance, scores: Sequence[float]) -> None:
    """The best metric after each workflow run, and its summary against the task's reference optimum."""
    metrics = [task.to_metric(s) for s in scores]
    row["curve"] = best_curve([m for m in metrics if m is not None], task.lower_is_better)
    references = task.info.get("references")
    if callable(references):
        references = references()
    row["references"] = references or {}
    row["reference"] = (references or {}).get("grid_best_delay")
    row["convergence"] = summarize(row["curve"], row["reference"], task.lower_is_better)


def _short_values(values: dict[str, Any], limit: int = 600) -> dict[str, Any]:
    return {k: (v if not isinstance(v, str) or len(v) <= limit else v[:limit] + "...") for k, v in values.items()}


# ----- Trace's OptoPrime ----------------------------------------------------------------------------------
def _run_trace(
    task: TaskInstance,
    optimizer: str,
    task_chat: BudgetedChat,
    chat: BudgetedChat,
    settings: Settings,
    row: dict[str, Any],
) -> None:
    from bench.tasks import traceopt

    reason = traceopt.available()
    if reason:
        raise NotAvailable(reason)
    assert task.trace_program is not None
    program = task.trace_program(task_chat)
    row["version"] = "trace-opt"

    def test_score() -> float | None:
        before_calls = task_chat.usage.calls
        score, _ = traceopt.evaluate(program, task.testset, task.feedback, task.failure_score)
        row["_task_calls_eval"] = row.get("_task_calls_eval", 0) + task_chat.usage.calls - before_calls
        return task.to_metric(score)

    row["before"] = test_score()
    started = time.time()
    result = traceopt.optimize(
        program,
        task.trainset,
        task.feedback,
        chat,
        task.valset,
        max_steps=settings.steps,
        batch_size=settings.batch_size,
        max_llm_calls=settings.budget_calls,
        seed=settings.seed,
        memory_size=settings.memory_size,
        max_answer_tokens=settings.answer_tokens,
        failure_score=task.failure_score,
    )
    row["seconds"] = round(time.time() - started, 3)
    row["after"] = test_score()
    row["details"].update(
        steps=result.steps,
        best_val=task.to_metric(result.best_score),
        initial_val=task.to_metric(result.initial_score),
        kept_steps=sum(1 for h in result.history if h.get("kept")),
    )
    errors = [h["error"] for h in result.history if h.get("error")]
    _ended(row, result.stopped_reason, errors[-1] if errors else "", sum(1 for h in result.history if h.get("changed")))


# ----- DSPy ------------------------------------------------------------------------------------------------
def copro_plan(budget: int, predictors: int, breadth: int = 0) -> tuple[int, int, int]:
    """COPRO's (breadth, depth, planned calls) within ``budget``: it asks for breadth-1 candidates
    per predictor first, then breadth per predictor at each further depth, one call per candidate."""
    per = budget // max(1, predictors)
    if per < 1:
        raise NotAvailable(
            f"a budget of {budget} calls is too small for COPRO on {predictors} predictors "
            f"(it needs at least {predictors})"
        )
    if breadth <= 0:
        breadth = 10 if per >= 29 else max(2, min(5, per + 1))
    breadth = max(2, min(breadth, per + 1))
    depth = 1 + (per - (breadth - 1)) // breadth
    planned = predictors * ((breadth - 1) + (depth - 1) * breadth)
    return breadth, depth, planned


def mipro_plan(budget: int, predictors: int, trainset_size: int) -> dict[str, Any]:
    """MIPROv2's proposer calls (an upper bound; dspy 3.4's GroundedProposer): a dataset summary
    (1 call per 10 training examples, plus 1), then per instruction candidate and predictor one
    proposal call, preceded by two calls (describe the program, describe the module) when it is
    program-aware. Light proposes 6 candidates per predictor (at most: one per bootstrapped demo set)."""
    summary = 1 + max(0, math.ceil((trainset_size - 10) / 10)) + 1
    light = summary + predictors * 6 * 3
    if light <= budget:
        return {"auto": "light", "planned": light, "data_aware": True, "program_aware": True, "candidates": 6}
    for data_aware, program_aware in ((True, True), (False, True), (True, False), (False, False)):
        fixed = summary if data_aware else 0
        per_candidate = predictors * (3 if program_aware else 1)
        candidates = min(6, (budget - fixed) // per_candidate)
        if candidates >= 2:
            return {
                "auto": None,
                "planned": fixed + candidates * per_candidate,
                "data_aware": data_aware,
                "program_aware": program_aware,
                "candidates": candidates,
            }
    raise NotAvailable(
        f"a budget of {budget} calls is too small for MIPROv2 on {predictors} predictors "
        f"(it needs at least {2 * predictors} instruction proposals)"
    )


def _run_dspy(
    task: TaskInstance,
    optimizer: str,
    task_chat: BudgetedChat,
    chat: BudgetedChat,
    settings: Settings,
    row: dict[str, Any],
) -> None:
    try:
        import dspy
    except ImportError as exc:
        raise NotAvailable(f"dspy is not installed ({exc}); pip install 'opto-adapters[dspy]'") from exc
    assert task.dspy is not None
    version = task.dspy
    student = version.make_program()
    row["version"] = "dspy"
    prompt_lm = make_dspy_lm(
        chat, name="opto/optimizer", temperature=settings.temperature, max_tokens=settings.answer_tokens
    )
    if version.own_lm:
        task_lm = student.predictors()[0].lm
    else:
        task_lm = make_dspy_lm(task_chat, name="opto/task", temperature=0.0, max_tokens=settings.task_max_tokens)
    trainset = [version.to_example(e) for e in task.trainset]
    valset = [version.to_example(e) for e in task.valset]
    testset = [version.to_example(e) for e in task.testset]
    originals = {id(d): e for d, e in zip(trainset + valset + testset, task.trainset + task.valset + task.testset)}

    def original(gold: Any) -> dict[str, Any]:
        found = originals.get(id(gold))
        return found if found is not None else {k: gold[k] for k in gold.keys()}

    def float_metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> float:
        return task.score(original(gold), version.output_of(pred))

    def feedback_metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        feedback = task.feedback(original(gold), version.output_of(pred))
        return dspy.Prediction(score=float(feedback.score or 0.0), feedback=feedback.text)

    def test_score(program: Any) -> float | None:
        before_calls = task_chat.usage.calls
        evaluator = dspy.Evaluate(
            devset=testset,
            metric=float_metric,
            num_threads=settings.threads,
            display_progress=False,
            display_table=False,
            failure_score=task.failure_score,
            max_errors=len(testset) + 1,
        )
        with dspy.context(lm=task_lm):
            result = evaluator(program)
        row["_task_calls_eval"] = row.get("_task_calls_eval", 0) + task_chat.usage.calls - before_calls
        return task.to_metric(float(result.score) / 100.0)

    adapter = {} if settings.dspy_json_fallback else {"adapter": dspy.ChatAdapter(use_json_adapter_fallback=False)}
    row["details"]["json_fallback"] = settings.dspy_json_fallback
    with dspy.context(**adapter):
        row["before"] = test_score(student)
    predictors = len(student.predictors())
    started = time.time()
    row["_started"] = started  # for the wall time of a run that stops with an exception
    with dspy.context(lm=task_lm, **adapter):
        if optimizer == "copro":
            breadth, depth, planned = copro_plan(settings.budget_calls, predictors, settings.copro_breadth)
            row["details"].update(breadth=breadth, depth=depth, planned_calls=planned)
            teleprompter = dspy.COPRO(
                prompt_model=prompt_lm,
                metric=float_metric,
                breadth=breadth,
                depth=depth,
                init_temperature=settings.temperature,
            )
            compiled = teleprompter.compile(
                student, trainset=trainset, eval_kwargs={"num_threads": settings.threads, "display_progress": False}
            )
        elif optimizer == "mipro":
            plan = mipro_plan(settings.budget_calls, predictors, len(trainset))
            row["details"].update(plan)
            kwargs: dict[str, Any] = {}
            if plan["auto"] is None:
                teleprompter = dspy.MIPROv2(
                    metric=float_metric,
                    prompt_model=prompt_lm,
                    task_model=task_lm,
                    auto=None,
                    num_candidates=plan["candidates"],
                    init_temperature=settings.temperature,
                    num_threads=settings.threads,
                    seed=settings.seed,
                    verbose=False,
                )
                kwargs["num_trials"] = max(2, int(1.5 * plan["candidates"]))
                kwargs["minibatch"] = False
            else:
                teleprompter = dspy.MIPROv2(
                    metric=float_metric,
                    prompt_model=prompt_lm,
                    task_model=task_lm,
                    auto="light",
                    init_temperature=settings.temperature,
                    num_threads=settings.threads,
                    seed=settings.seed,
                    verbose=False,
                )
            compiled = teleprompter.compile(
                student,
                trainset=trainset,
                valset=valset,
                seed=settings.seed,
                data_aware_proposer=plan["data_aware"],
                program_aware_proposer=plan["program_aware"],
                **kwargs,
            )
        elif optimizer == "gepa":
            compiled = _run_gepa(dspy, student, trainset, valset, feedback_metric, prompt_lm, chat, settings, row)
        elif optimizer == "opto-dspy":
            compiled = _run_opto_dspy(student, trainset, valset, feedback_metric, chat, settings, row)
        else:
            raise KeyError(optimizer)
    row["seconds"] = round(time.time() - started, 3)
    row["stopped_reason"] = "budget" if chat.remaining() == 0 else "optimizer finished"
    with dspy.context(**adapter):
        row["after"] = test_score(compiled)


class _CallStopper:
    """A GEPA stop condition: stop once the optimizer's client has made its budget of calls."""

    def __init__(self, chat: BudgetedChat, budget: int) -> None:
        self.chat, self.budget = chat, budget

    def __call__(self, gepa_state: Any) -> bool:
        return self.chat.usage.calls >= self.budget


def _run_gepa(
    dspy: Any,
    student: Any,
    trainset: list,
    valset: list,
    metric: Any,
    prompt_lm: Any,
    chat: BudgetedChat,
    settings: Settings,
    row: dict[str, Any],
) -> Any:
    minibatch = min(3, len(trainset))
    # generous: the LLM-call stopper is what ends the run; metric calls are task-model work
    metric_calls = (settings.budget_calls + 2) * (2 * minibatch + len(valset)) + 5 * len(valset)
    row["details"].update(max_metric_calls=metric_calls, reflection_minibatch_size=minibatch)
    teleprompter = dspy.GEPA(
        metric=metric,
        reflection_lm=prompt_lm,
        max_metric_calls=metric_calls,
        reflection_minibatch_size=minibatch,
        num_threads=settings.threads,
        seed=settings.seed,
        gepa_kwargs={"stop_callbacks": [_CallStopper(chat, settings.budget_calls)]},
    )
    return teleprompter.compile(student, trainset=trainset, valset=valset)


def _run_opto_dspy(
    student: Any, trainset: list, valset: list, metric: Any, chat: BudgetedChat, settings: Settings, row: dict[str, Any]
) -> Any:
    try:
        from opto_adapters.dspy.teleprompter import OptoTeleprompter
    except ImportError as exc:
        raise NotAvailable(f"opto_adapters.dspy.teleprompter is not available yet ({exc})") from exc
    wanted = {
        "metric": metric,
        "llm": chat,
        "max_steps": settings.steps,
        "num_threads": settings.threads,
        "max_llm_calls": settings.budget_calls,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "temperature": settings.temperature,
    }
    accepted = inspect.signature(OptoTeleprompter).parameters
    takes_all = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in wanted.items() if takes_all or k in accepted}
    row["details"]["teleprompter_kwargs"] = sorted(kwargs)
    if "max_llm_calls" not in kwargs:
        row["budget_note"] = "hard cap N (OptoTeleprompter takes no max_llm_calls)"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-opto-dspy-") as run_dir:
        if "run_dir" in accepted:
            kwargs["run_dir"] = run_dir  # its checkpoints are not needed after the run
        teleprompter = OptoTeleprompter(**kwargs)
        try:
            return teleprompter.compile(student, trainset=trainset, valset=valset)
        except BudgetExhausted:
            raise RuntimeError("OptoTeleprompter went past the budget (the cap refused the call)") from None


# ----- the table ------------------------------------------------------------------------------------------
def run_comparison(
    tasks: Sequence[str],
    optimizers: Sequence[str],
    task_chat: Any,
    optimizer_chat: Any,
    settings: Settings,
    *,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every optimizer on every task (where it applies), one row each, in order."""
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizers {unknown}; known: {', '.join(OPTIMIZERS)}")
    rows = []
    for seed in range(settings.seed, settings.seed + max(1, settings.seeds)):
        seeded = replace(settings, seed=seed)
        for name in tasks:
            try:
                task = get_task(name).make(
                    seed=seed,
                    quick=settings.quick,
                    task_max_tokens=settings.task_max_tokens,
                    dspy_module=settings.dspy_module,
                )
            except Exception as exc:  # a task that cannot be made is a row per optimizer, not the end of the table
                task = None
                failure = f"{type(exc).__name__}: {exc}"
            for optimizer in optimizers:
                if task is None:
                    row = {
                        "task": name,
                        "optimizer": optimizer,
                        "status": "error",
                        "reason": failure,
                        "before": None,
                        "after": None,
                        "calls": 0,
                        "tokens": 0,
                        "details": {},
                    }
                elif not applicable(task, optimizer):
                    continue
                else:
                    log.info("running %s on %s (seed %d)", optimizer, name, seed)
                    row = _guarded_row(task, optimizer, task_chat, optimizer_chat, seeded)
                row["model"] = getattr(optimizer_chat, "model", "")
                row["temperature"] = settings.temperature
                row["seed"] = seed
                rows.append(row)
                if on_row:
                    on_row(row)
    return rows


def _guarded_row(
    task: TaskInstance, optimizer: str, task_chat: Any, optimizer_chat: Any, settings: Settings
) -> dict[str, Any]:
    """`run_row`, and an error row for anything that still escapes it: the table always goes on."""
    try:
        return run_row(task, optimizer, task_chat, optimizer_chat, settings)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        row = {
            "task": task.name,
            "family": task.family,
            "optimizer": optimizer,
            "metric": task.metric,
            "lower_is_better": task.lower_is_better,
            "status": "error",
            "reason": f"{type(exc).__name__}: {exc}",
            "before": None,
            "after": None,
            "calls": 0,
            "tokens": 0,
            "seconds": None,
            "details": {"traceback": traceback.format_exc(limit=8)},
        }
        log.warning("%s on %s failed outside its row: %s", optimizer, task.name, row["reason"])
        return row


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


COLUMNS = [
    "task",
    "optimizer",
    "metric",
    "before",
    "after",
    "calls",
    "tokens",
    "cost_usd",
    "seconds",
    "task_calls",
    "status",
    "stopped_reason",
    "proposals",
]


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as a text (or Markdown) table; unavailable rows show their reason below."""
    body = [[_fmt(row.get(c), 4 if c == "cost_usd" else 3) for c in COLUMNS] for row in rows]
    notes = [
        f"{row['task']} / {row['optimizer']}: {row['status']}: {row['reason']}"
        for row in rows
        if row.get("status") != "ok" or row.get("reason")
    ]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Before/after bars per optimizer, one panel per task; PNG with matplotlib, else a plain SVG."""
    done = [r for r in rows if r.get("status") == "ok" and r.get("before") is not None and r.get("after") is not None]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_svg(done, path.with_suffix(".svg"))
    tasks = list(dict.fromkeys(r["task"] for r in done)) or ["(no results)"]
    cols = min(3, len(tasks))
    rows_n = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.4 * rows_n), squeeze=False)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks):
        mine = [r for r in done if r["task"] == task]
        names = [r["optimizer"] for r in mine]
        xs = range(len(mine))
        ax.bar([x - 0.2 for x in xs], [r["before"] for r in mine], width=0.4, label="before", color="#b0b0b0")
        ax.bar([x + 0.2 for x in xs], [r["after"] for r in mine], width=0.4, label="after", color="#3465a4")
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        metric = mine[0]["metric"] if mine else ""
        ax.set_title(
            f"{task} ({metric}{', lower is better' if mine and mine[0]['lower_is_better'] else ''})", fontsize=9
        )
        if mine and mine[0]["metric"] == "accuracy":
            ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)
    plt.close(fig)
    return path.with_suffix(".png")


def _plot_svg(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """A minimal bar chart written by hand (no matplotlib): one line of bars per row."""
    height = 24 * len(rows) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        '<text x="10" y="18">before (grey) and after (blue); bar length relative per task</text>',
    ]
    scale: dict[str, float] = {}
    for r in rows:
        scale[r["task"]] = max(scale.get(r["task"], 0.0), abs(r["before"]), abs(r["after"]), 1e-9)
    for i, r in enumerate(rows):
        y = 34 + 24 * i
        parts.append(f'<text x="10" y="{y + 10}">{r["task"]} / {r["optimizer"]}</text>')
        for j, (key, color) in enumerate((("before", "#b0b0b0"), ("after", "#3465a4"))):
            width = 300 * abs(r[key]) / scale[r["task"]]
            parts.append(f'<rect x="330" y="{y + 10 * j}" width="{width:.1f}" height="9" fill="{color}"/>')
            parts.append(f'<text x="{335 + width:.1f}" y="{y + 8 + 10 * j}">{r[key]:.3g}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))
    return path


def write_outputs(rows: Sequence[dict[str, Any]], out: Path, meta: dict[str, Any]) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=2, default=str))
    markdown = f"{meta['command']}\n\n{format_table(rows, markdown=True)}\n"
    written = {"json": str(out / "results.json"), "markdown": str(out / "results.md")}
    if any(r.get("curve") for r in rows):
        markdown += (
            "\n## Convergence (medians over seeds)\n\n" + format_aggregate(aggregate(rows), markdown=True) + "\n"
        )
        curves = plot_convergence(rows, out / "convergence")
        if curves:
            written["convergence"] = str(curves)
    (out / "results.md").write_text(markdown)
    written["plot"] = str(plot(rows, out / "plot"))
    return written


# ----- command line ---------------------------------------------------------------------------------------
def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="Run optimizers on generated tasks with the same model, temperature and budget of optimizer "
        "LLM calls; print a table of test scores before/after, calls, tokens, cost and time.",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated task names or families (bbh, numeric, workflow, all); "
        f"default: all, or {','.join(QUICK_TASKS)} with --quick. Known: {', '.join(task_names())}",
    )
    parser.add_argument(
        "--optimizers",
        default=",".join(OPTIMIZERS),
        help=f"comma-separated, from: {', '.join(OPTIMIZERS)} (default: all)",
    )
    parser.add_argument(
        "--base-url",
        default=None,
        help="OpenAI-compatible endpoint for both the task model and the optimizers "
        "(default: OPENAI_BASE_URL, else the embedded local model; 'local' forces it)",
    )
    parser.add_argument("--model", default=None, help="model name (default: OPTO_MODEL, or the endpoint's first)")
    parser.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="name of the environment variable holding the API key (the key is never printed)",
    )
    parser.add_argument(
        "--budget-calls",
        type=int,
        default=None,
        help="optimizer LLM calls per run (default 10, or the --budget-evals budget when given)",
    )
    parser.add_argument(
        "--budget-evals",
        type=int,
        default=None,
        help="workflow runs per row (the loop's max_evaluations, exact); records convergence curves "
        "(best after 10/25/50 runs, runs to within 5%% of the reference optimum) and a plot",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per (task, optimizer): --seed, --seed+1, ...")
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="temperature of every optimizer call, for every optimizer (default 1.0)",
    )
    parser.add_argument("--answer-tokens", type=int, default=2048, help="max tokens of an optimizer answer")
    parser.add_argument("--task-max-tokens", type=int, default=512, help="max tokens of a task-model answer")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="threads for evaluating examples")
    parser.add_argument("--max-steps", type=int, default=None, help="default: 2 x the budget")
    parser.add_argument("--copro-breadth", type=int, default=0, help="0: derived from the budget")
    parser.add_argument(
        "--dspy-module",
        choices=["predict", "cot"],
        default="predict",
        help="the DSPy program of the BBH tasks: dspy.Predict or dspy.ChainOfThought",
    )
    parser.add_argument(
        "--dspy-no-json-fallback",
        action="store_true",
        help="every DSPy program and optimizer uses ChatAdapter without its JSONAdapter retry, so "
        "one prediction is one LM call (DSPy's default retries once when a reply does not parse)",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="response cache for the task model only (optimizer calls are never cached)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per LLM request (whole answer) before a retry (default: the client's own, "
        "60 for hosted endpoints, 600 for the embedded model)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small splits and a few tasks (a plumbing check)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per result row instead of a table")
    parser.add_argument("--out", default=None, help="directory for results.json, results.md and the plot")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def task_names_families() -> set[str]:
    return {get_task(name).family for name in task_names()}


def resolve_tasks(text: str | None, quick: bool) -> list[str]:
    """Task names from ``--tasks``: names, or families (``bbh``, ``workflow``; a task named like a
    family, such as ``numeric``, means the task)."""
    if not text:
        return list(QUICK_TASKS) if quick else task_names()
    names: list[str] = []
    for item in _split(text):
        if item == "all":
            names += task_names()
        elif item in ("bbh", "workflow") or item not in task_names() and item in task_names_families():
            names += task_names(item)
        else:
            get_task(item)  # a clear error for an unknown name
            names.append(item)
    return list(dict.fromkeys(names))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.budget_calls is None:
        args.budget_calls = args.budget_evals if args.budget_evals else 10
    if args.budget_calls < 1 or (args.budget_evals is not None and args.budget_evals < 1) or args.seeds < 1:
        raise SystemExit("--budget-calls, --budget-evals and --seeds must be at least 1")
    try:
        tasks = resolve_tasks(args.tasks, args.quick)
    except KeyError as exc:
        raise SystemExit(str(exc)) from None
    optimizers = _split(args.optimizers)
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; known: {', '.join(OPTIMIZERS)}")
    settings = Settings(
        budget_calls=args.budget_calls,
        temperature=args.temperature,
        answer_tokens=args.answer_tokens,
        task_max_tokens=args.task_max_tokens,
        batch_size=args.batch_size,
        threads=args.threads,
        seed=args.seed,
        max_steps=args.max_steps,
        copro_breadth=args.copro_breadth,
        dspy_module=args.dspy_module,
        dspy_json_fallback=not args.dspy_no_json_fallback,
        quick=args.quick,
        budget_evals=args.budget_evals,
        seeds=args.seeds,
    )
    from opto_core.llm.client import OpenAIChat

    api_key = os.environ.get(args.api_key_env) or None
    task_chat = OpenAIChat(
        base_url=args.base_url, api_key=api_key, model=args.model, cache_dir=args.cache_dir, timeout=args.timeout
    )
    optimizer_chat = OpenAIChat(base_url=args.base_url, api_key=api_key, model=args.model, timeout=args.timeout)
    command = "python -m bench.compare " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    started = datetime.datetime.now(datetime.timezone.utc)

    def show(row: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(row, default=str), flush=True)
        else:
            print(
                f"done: {row['task']} / {row['optimizer']}: {row['status']} before={_fmt(row['before'])} "
                f"after={_fmt(row['after'])} calls={row['calls']}",
                file=sys.stderr,
                flush=True,
            )

    # DSPy and trace-opt print progress to stdout: keep stdout for the table or the JSON rows
    stdout = sys.stdout

    def emit(row: dict[str, Any]) -> None:
        with contextlib.redirect_stdout(stdout):
            show(row)

    with contextlib.redirect_stdout(sys.stderr):
        rows = run_comparison(tasks, optimizers, task_chat, optimizer_chat, settings, on_row=emit)
    meta = {
        "command": command,
        "date": started.isoformat(timespec="seconds"),
        "model": getattr(optimizer_chat, "model", None),
        "endpoint": getattr(optimizer_chat, "base_url", None),
        "settings": asdict(settings),
        "budget_notes": BUDGET_NOTES,
        "optimizers": {o: OPTIMIZERS[o] for o in optimizers},
    }
    if not args.json:
        print(
            f"# {command}\n# {meta['date']}  model={meta['model']}  endpoint={meta['endpoint']}  "
            f"budget={settings.budget_calls} calls  temperature={settings.temperature}\n"
        )
        print(format_table(rows))
        if any(r.get("curve") for r in rows):
            print("\n# convergence (medians over seeds; metric: lower is better for delays and errors)\n")
            print(format_aggregate(aggregate(rows)))
    if args.out:
        written = write_outputs(rows, Path(args.out), meta)
        print(f"wrote {', '.join(written.values())}", file=sys.stderr)
    return 0 if all(r["status"] in ("ok", "not available", "ran out of budget") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
