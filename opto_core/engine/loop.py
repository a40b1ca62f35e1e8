"""The optimization loop, written once for every adapter.

One step: run a minibatch of training examples with tracing, get feedback on each output,
trace it back (`backward`), let the optimizer propose new values, (optionally) let a person
approve them, apply them, evaluate, and keep them only under the keep rule (by default: the score
did not drop); otherwise roll back. The best values seen are applied at the end.

What makes it safe to leave running:
- a failed evaluation is never progress: runs that failed for reasons outside the workflow's
  logic (event loop, connection, the adapter) make the step roll back, and count as errors;
- every parameter's live value is validated again after each evaluation (LLM-written code runs
  there and could write around the optimizer); a step that left a value invalid rolls back;
- budgets (steps, optimizer LLM calls, tokens, USD, workflow evaluations, errors), a target
  score, a ``STOP`` file and Ctrl-C end the run after a finished step, everything saved in a
  locked run directory from which ``optimize(..., run_dir=same)`` resumes.

All options live in one `Settings`; ``optimize`` takes one, or its fields as keywords.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from opto_core.engine.coverage import Coverage
from opto_core.engine.executors import (
    Evaluation,
    ThreadExecutor,
    make_executor,
)
from opto_core.engine.rundir import RunDir
from opto_core.engine.settings import Settings
from opto_core.engine.target import Target
from opto_core.kernel.backward import BackwardError, ProblemInstance, backward
from opto_core.kernel.code_policy import apply_policy
from opto_core.kernel.redact import scrub_url
from opto_core.llm.usage import Usage
from opto_core.optimizers.protocol import HasMemory, Optimizer, Proposal, describe

log = logging.getLogger("opto")

FeedbackFn = Callable[[Any, Any], Any]


class OptimizerFailed(RuntimeError):
    """The optimizer's step raised (an API error after its retries): the run stops, saved, resumable."""


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
    evaluations: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether the run stopped on an error (API failure, too many failed runs, invalid values)."""
        return self.stopped_reason in ERROR_STOPS

    def save_values(self, path: str, **meta: Any) -> Any:
        """Write ``best_values`` as an ``opto-values/1`` file, for the adapters' ``apply_values``."""
        from opto_core.kernel.values import save_values

        return save_values(path, self.best_values, {**self.meta, "score": self.best_score,
                                                    "steps": self.steps, **meta})


#: Stop reasons that mean the run did not end as planned (the CLI exits non-zero on them).
ERROR_STOPS = ("optimizer_error", "max_errors", "invalid_values")


def mean_score(evaluations: Sequence[Evaluation]) -> float | None:
    scores = [e.feedback.score for e in evaluations if e.feedback.score is not None]
    return sum(scores) / len(scores) if scores else None


def evaluate(target: Target, examples: Sequence[Any], feedback_fn: FeedbackFn, *, num_threads: int = 1,
             failure_score: float = 0.0, indices: Sequence[int] | None = None) -> list[Evaluation]:
    """Run every example (in ``num_threads`` threads) and collect its feedback, in order."""
    indices = list(indices) if indices is not None else list(range(len(examples)))
    return ThreadExecutor(num_threads).evaluate(target, examples, feedback_fn, indices=indices,
                                                failure_score=failure_score)


def optimize(target: Target, trainset: Sequence[Any], feedback_fn: FeedbackFn, optimizer: Optimizer,
             valset: Sequence[Any] | None = None, settings: Settings | None = None,
             **overrides: Any) -> OptimizationResult:
    """Optimize ``target``'s trainable parameters on ``trainset`` with ``optimizer``.

    ``feedback_fn(example, output)`` returns a float, a string, a ``(score, text)`` pair or a
    `Feedback` (higher scores are better). Steps are judged on ``valset`` (or, without one, on
    the step's own training batch, before and after). ``settings`` (a `Settings`) and keyword
    overrides of its fields set budgets, batching, the executor, the keep rule, the run
    directory and safety options; see `opto_core.engine.settings.Settings`.

    The first evaluation also checks coverage (`opto_core.engine.coverage`): one warning names every
    trainable parameter feedback cannot reach, with the reason and the fix, and the step record
    keeps it (``coverage``). When no parameter is reachable, or with ``require_coverage=True`` any
    is not, `CoverageError` is raised before any optimizer call.
    """
    return _Run(target, trainset, feedback_fn, optimizer, valset, Settings.build(settings, **overrides)).run()


class _Interrupt:
    """Turns the first Ctrl-C into 'stop after this step' (main thread only); a second one aborts."""

    def __init__(self, on_request: Callable[[], None] | None = None) -> None:
        self.requested = False
        self._previous: Any = None
        self._on_request = on_request

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping; the runs in flight are cancelled and this step rolls back (press again "
                    "to abort)")
        if self._on_request is not None:
            self._on_request()

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _StopFileWatch:
    """Cancels the batch in flight as soon as a ``STOP`` file appears (the step then rolls back)."""

    def __init__(self, store: RunDir, executor: Any, every: float = 0.5) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(store, executor, every), daemon=True,
                                        name="opto-stop-watch")
        self._thread.start()

    def _watch(self, store: RunDir, executor: Any, every: float) -> None:
        while not self._done.wait(every):
            if store.stop_requested:
                executor.cancel()
                return

    def stop(self) -> None:
        self._done.set()


class _Run:
    """One optimization run: its state, and the steps that change it."""

    def __init__(self, target: Target, trainset: Sequence[Any], feedback_fn: FeedbackFn, optimizer: Optimizer,
                 valset: Sequence[Any] | None, settings: Settings) -> None:
        if not trainset:
            raise ValueError("optimize needs a non-empty trainset")
        self.target, self.trainset, self.feedback_fn, self.optimizer = target, list(trainset), feedback_fn, optimizer
        self.valset = list(valset) if valset else None
        self.settings = settings
        parameters = target.parameters()
        if not any(p.trainable for p in parameters):
            raise ValueError("the target has no trainable parameter")
        apply_policy(parameters, settings.code_policy)  # every code value is checked statically before it runs
        if settings.memory_size is not None:
            if isinstance(optimizer, HasMemory):
                optimizer.resize_memory(settings.memory_size)
            else:
                log.warning("memory_size=%s is ignored: %s has no memory of past steps (leave memory_size unset "
                            "for it)", settings.memory_size, type(optimizer).__name__)
        optimizer.set_parameters(parameters)
        self.store = RunDir(settings.run_dir) if settings.run_dir else None
        self.usage = Usage()
        self.history: list[dict[str, Any]] = []
        self.errors = 0
        self.evaluations = 0
        self.infrastructure_reported: set[str] = set()
        self.backward_kwargs: dict[str, Any] = {"follow": tuple(settings.follow)} if settings.follow else {}
        self.initial_score: float | None = None
        self.current_score: float | None = None
        self.best_score: float | None = None
        self.best_values: dict[str, Any] = {}
        self._cache: dict[tuple[Any, ...], list[Evaluation]] = {}

    # ----- the run ---------------------------------------------------------------------------------
    def run(self) -> OptimizationResult:
        executor = make_executor(self.settings, self.target)  # first: an isolated executor forks before any thread
        self.executor = executor
        opened = False
        stopped, error, last_step = "max_steps", "", 0
        try:
            checkpoint = self.store.open(resume=True) if self.store else None
            opened = True
            if checkpoint is not None:
                last_step = self._resume(checkpoint)
                if checkpoint.get("done") and last_step >= self.settings.max_steps:
                    log.warning("run directory %s already holds a finished run (%d steps, stopped: %s); nothing to "
                                "do. Pass max_steps > %d to continue it, or use a new run_dir to start over.",
                                self.settings.run_dir, last_step, checkpoint.get("status"), last_step)
                    stopped = "already_finished"
            else:
                self._start()
            if stopped != "already_finished":
                stopped, error, last_step = self._steps(last_step)
            return self._finish(stopped, error, last_step)
        finally:
            executor.close()
            if opened and self.store is not None:
                self.store.close()

    def _start(self) -> None:
        if self.store:
            described = describe(self.optimizer)
            self.store.write_config({**self.settings.to_config(), **described,
                                     "base_url": scrub_url(described["base_url"] or "") or None,
                                     "parameters": [p.spec() for p in self.target.parameters()],
                                     "trainset_size": len(self.trainset), "valset_size": len(self.valset or [])})
        examples = self.valset or self.trainset
        evaluations = self._evaluate(examples, list(range(len(examples))), "val" if self.valset else "train")
        covered = Coverage.of(self.target.parameters(), evaluations, follow=self.settings.follow, target=self.target)
        covered.enforce(require=self.settings.require_coverage)  # one warning, or CoverageError before the optimizer
        self.initial_score = self.current_score = self.best_score = mean_score(evaluations)
        self.best_values = self._values()
        self.optimizer.observe(self.best_values, self.initial_score)
        record: dict[str, Any] = {"step": 0, "kind": "initial", "values": self.best_values,
                                  "eval_score": self.initial_score, "best_score": self.best_score,
                                  "usage": self.usage.to_dict(), "evaluations": self.evaluations, "time": time.time(),
                                  "coverage": covered.to_dict()}
        self._note_failures(record, evaluations)
        if self.store:
            record["graph"] = self.store.write_graph(0, evaluations[0].graph.to_json())
        self._record(record, step=0)

    def _resume(self, checkpoint: dict[str, Any]) -> int:
        self.target.apply(_validated(self.target, checkpoint["current"]))
        self.optimizer.set_parameters(self.target.parameters())
        self.optimizer.load_state_dict(checkpoint.get("optimizer", {}))
        self.usage = Usage.from_dict(checkpoint.get("usage", {}))
        start = int(checkpoint["step"])
        self.current_score = checkpoint.get("current_score")
        self.best_score = checkpoint.get("best_score")
        self.best_values = checkpoint["best"]
        self.initial_score = checkpoint.get("initial_score")
        self.errors = int(checkpoint.get("errors", 0))
        self.evaluations = int(checkpoint.get("evaluations", 0))
        assert self.store is not None
        self.history = self.store.truncate_history(start)
        for record in self.history:  # search-based optimizers rebuild their trials from the history
            if record.get("kind") == "initial":
                self.optimizer.observe(record.get("values", {}), record.get("eval_score"))
            elif record.get("candidate_values") is not None:
                self.optimizer.observe(record["candidate_values"], record.get("eval_score"))
        log.info("resuming %s after step %d", self.settings.run_dir, start)
        return start

    def _steps(self, start: int) -> tuple[str, str, int]:
        settings = self.settings
        bar = _Progress(settings.progress, settings.max_steps, start)
        step = last_step = start
        watch = _StopFileWatch(self.store, self.executor) if self.store else None
        try:
            with _Interrupt(self.executor.cancel) as interrupt:
                while step < settings.max_steps:
                    reason = self._stop_reason(step + 1, interrupt)
                    if reason:
                        return reason, "", last_step
                    try:
                        record = self._step(step + 1)
                    except OptimizerFailed as exc:
                        log.error("%s; stopping. Everything up to step %d is saved; run again to resume.", exc, step)
                        return "optimizer_error", str(exc), last_step
                    step = last_step = step + 1
                    problems = _invalid(self.target)
                    if problems:  # should never happen after the step's own check: stop rather than save it
                        return "invalid_values", f"parameters hold invalid values: {problems}", last_step
                    self.current_score = record["current_score"]
                    # without a validation set, scores of different batches do not compare: the last kept
                    # values are the best known
                    if record["kept"] and (self.valset is None or _better(self.current_score, self.best_score)):
                        self.best_score, self.best_values = self.current_score, self._values()
                    record["best_score"] = self.best_score
                    record["errors_total"] = self.errors
                    record["evaluations_total"] = self.evaluations
                    self._record(record, step)
                    bar.update(step, record, self.best_score, self.usage)
                    if settings.on_step:
                        settings.on_step(record)
                    if record.get("proposal", {}).get("terminated"):
                        log.info("step %d: the optimizer proposed no change", step)
        finally:
            bar.close()
            if watch is not None:
                watch.stop()
        return "max_steps", "", last_step

    def _stop_reason(self, next_step: int, interrupt: _Interrupt) -> str | None:
        s = self.settings
        reason = _budget_reason(self.usage, s.max_llm_calls, s.max_tokens, s.max_cost_usd)
        if reason is None and s.max_evaluations is not None and \
                self.evaluations + self._runs_needed(next_step) > s.max_evaluations:
            reason = "max_evaluations"
        if reason is None and s.target_score is not None and self.best_score is not None \
                and self.best_score >= s.target_score:
            reason = "target_score"
        if reason is None and self.store and self.store.stop_requested:
            reason = "stop_file"
        if reason is None and interrupt.requested:
            reason = "interrupted"
        if reason is None and s.max_errors is not None and self.errors > s.max_errors:
            reason = "max_errors"
        return reason

    def _finish(self, stopped: str, error: str, last_step: int) -> OptimizationResult:
        final_values = self._values()
        if self.best_values and self.best_values != final_values:
            self.target.apply(_validated(self.target, self.best_values))
        if self.store:
            self.store.write_checkpoint(self._checkpoint(last_step, stopped, done=True))
        meta = {"framework": getattr(self.target, "framework", "python"),
                "framework_version": getattr(self.target, "framework_version", ""),
                "optimizer": type(self.optimizer).__name__}
        return OptimizationResult(self.best_values, self.best_score, self.initial_score, self.history,
                                  self.usage.to_dict(), str(self.store.path) if self.store else None, stopped,
                                  steps=len(self.history) - 1 if self.history else 0, final_values=final_values,
                                  error=error, evaluations=self.evaluations, meta=meta)

    # ----- one step --------------------------------------------------------------------------------
    def _batch(self, step: int) -> list[int]:
        rng = random.Random(f"{self.settings.seed}:{step}")  # per step, so a resumed run samples the same batches
        return sorted(rng.sample(range(len(self.trainset)), min(self.settings.batch_size, len(self.trainset))))

    def _runs_needed(self, step: int) -> int:
        """Workflow runs the next step will make: its batch (unless already run with these values) and the check."""
        indices = self._batch(step)
        batch = 0 if self._cached(("train", tuple(indices))) is not None else len(indices)
        return batch + (len(self.valset) if self.valset is not None else len(indices))

    def _step(self, step: int) -> dict[str, Any]:
        started = time.time()
        indices = self._batch(step)
        evaluations = self._evaluate([self.trainset[i] for i in indices], indices, "train")
        batch_score = mean_score(evaluations)
        values_before = self._values()
        record: dict[str, Any] = {"step": step, "kind": "step", "time": started, "batch": indices,
                                  "batch_score": batch_score, "keep_rule": self.settings.keep,
                                  "feedback": [e.feedback.to_dict() for e in evaluations],
                                  "values_before": values_before, "skipped_examples": []}
        self._note_failures(record, evaluations)
        if self.store:
            record["graph"] = self.store.write_graph(step, evaluations[0].graph.to_json())

        def unchanged(why: str, proposal: Proposal | None = None, **extra: Any) -> dict[str, Any]:
            if proposal is not None:
                record.setdefault("proposal", proposal.to_dict())
            record.update(kept=False, current_score=self.current_score, eval_score=None, values_after=values_before,
                          decision=why, usage=self.usage.to_dict(), seconds=time.time() - started, **extra)
            return record

        instances: list[ProblemInstance] = []
        if all(e.error_kind == "infrastructure" for e in evaluations):
            why = "every run of the batch failed outside the workflow's logic; nothing to learn from, no proposal"
            return unchanged(why, Proposal(error=why))
        for evaluation in evaluations:  # a failure is feedback too: the optimizer reads the error
            try:
                instances.append(backward(evaluation.graph, evaluation.feedback, **self.backward_kwargs))
            except BackwardError as exc:
                record["skipped_examples"].append(f"example {evaluation.index}: {exc}")
        if not instances:
            why = "no example could be traced back to a trainable parameter"
            return unchanged(why, Proposal(error=why))
        self.optimizer.set_parameters(self.target.parameters())
        proposal = self._propose(step, instances)
        record["proposal"] = proposal.to_dict()
        changes = {k: v for k, v in proposal.accepted.items() if values_before.get(k) != v}
        approve = self.settings.approve
        if changes and approve is not None:
            changes = self._approve(approve, values_before, changes, record)
        if not changes:
            return unchanged("the optimizer proposed no change" if not proposal.accepted or proposal.terminated
                             else "nothing to apply")
        snapshot = self.target.snapshot()
        try:
            self.target.apply(changes)
        except Exception as exc:  # an adapter refused a value validation could not foresee
            self.target.restore(snapshot)
            record["proposal"]["apply_error"] = f"{type(exc).__name__}: {exc}"
            return unchanged(f"applying the values failed: {type(exc).__name__}: {exc}")
        candidate = self._values()
        if self.valset is not None:
            checked = self._evaluate(self.valset, list(range(len(self.valset))), "val")
            baseline = self.current_score
        else:  # no validation set: compare on the step's own batch, before and after
            checked = self._evaluate([self.trainset[i] for i in indices], indices, "train")
            baseline = batch_score
        new_score = mean_score(checked)
        self._note_failures(record, checked, key="check_")
        self.optimizer.observe(candidate, new_score)
        kept, why = self._judge(new_score, baseline, record, checked)
        if kept:
            current = new_score
        else:
            self.target.restore(snapshot)
            current = self.current_score
            self._forget(candidate)
        record.update(kept=kept, decision=why, eval_score=new_score, current_score=current,
                      candidate_values=candidate, values_after=self._values(), usage=self.usage.to_dict(),
                      seconds=time.time() - started)
        return record

    def _propose(self, step: int, instances: list[ProblemInstance]) -> Proposal:
        calls = self.settings.max_llm_calls
        max_calls = None if calls is None else max(1, calls - self.usage.calls)  # 1: no retry, or the budget breaks
        try:
            proposal = self.optimizer.step(instances, max_calls=max_calls)
        except Exception as exc:  # the LLM is down, out of quota, ...: stop cleanly, resume later
            raise OptimizerFailed(f"step {step}: the optimizer failed: {type(exc).__name__}: {exc}") from exc
        self.usage.merge(proposal.usage)
        return proposal

    def _approve(self, approve: Callable[..., Any], values_before: dict[str, Any], changes: dict[str, Any],
                 record: dict[str, Any]) -> dict[str, Any]:
        from opto_core.engine.approval import review

        by_name = {p.name: p for p in self.target.parameters()}
        approved, decisions = review(approve, values_before, changes,
                                     kinds={name: by_name[name].kind for name in changes})
        checked: dict[str, Any] = {}
        for name, value in approved.items():
            try:
                checked[name] = by_name[name].validate(value)
            except Exception as exc:  # an edit that breaks the rules is refused like any invalid value
                decisions[name] = f"rejected: the edited value is invalid: {exc}"
        record["approval"] = decisions
        return {k: v for k, v in checked.items() if values_before.get(k) != v}

    def _judge(self, new: float | None, baseline: float | None, record: dict[str, Any],
               checked: list[Evaluation]) -> tuple[bool, str]:
        """The keep rule, written out in the step record."""
        problems = _invalid(self.target)
        if problems:
            record["invalid_after_run"] = problems
            log.error("step %d: after the runs, parameters hold invalid values (%s); rolling back",
                      record["step"], problems)
            return False, f"rolled back: the runs left invalid values in {sorted(problems)}"
        if any(e.error_kind == "infrastructure" for e in checked):
            return False, "rolled back: some runs failed outside the workflow, so the score says nothing"
        if new is None or baseline is None:
            return True, "kept: no score to compare (text feedback only)"
        rule = self.settings.keep
        if new > baseline:
            return True, f"kept: score {new:.4g} > {baseline:.4g}"
        if new == baseline and rule == "not_worse":
            return True, f"kept: score {new:.4g} = {baseline:.4g}, not worse (keep rule 'not_worse')"
        return False, f"rolled back: score {new:.4g} vs {baseline:.4g} (keep rule {rule!r})"

    # ----- evaluations -----------------------------------------------------------------------------
    def _evaluate(self, examples: Sequence[Any], indices: Sequence[int], which: str) -> list[Evaluation]:
        key = (which, tuple(indices))
        cached = self._cached(key)
        if cached is not None:
            return cached
        values = self._values()
        evaluations = self.executor.evaluate(self.target, examples, self.feedback_fn, indices=list(indices),
                                             failure_score=self.settings.failure_score, values=values)
        self.evaluations += len(evaluations)
        self.errors += sum(e.failed for e in evaluations)
        if self.settings.reuse_evaluations and not any(e.error_kind == "infrastructure" for e in evaluations):
            self._cache[key + (_key(values),)] = evaluations
            while len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
        return evaluations

    def _cached(self, key: tuple[Any, ...]) -> list[Evaluation] | None:
        if not self.settings.reuse_evaluations:
            return None
        return self._cache.get((*key, _key(self._values())))

    def _forget(self, values: dict[str, Any]) -> None:
        marker = _key(values)
        for key in [k for k in self._cache if k[-1] == marker]:
            del self._cache[key]

    def _note_failures(self, record: dict[str, Any], evaluations: Sequence[Evaluation], key: str = "") -> None:
        retried = [{"example": e.index, "causes": list(e.retried)} for e in evaluations if getattr(e, "retried", None)]
        if retried:  # runs an executor tried again (a dead worker, a timeout): each counted in the record
            record[f"{key}retried"] = retried
        infra = [e for e in evaluations if e.error_kind == "infrastructure"]
        if not infra:
            return
        record[f"{key}infrastructure_errors"] = [{"example": e.index, "error": _error_text(e.output)} for e in infra]
        cause = _error_text(infra[0].output)
        if cause not in self.infrastructure_reported:  # report each cause once, not once per example
            self.infrastructure_reported.add(cause)
            log.error("step %s: %d run(s) failed outside the workflow's logic: %s. Such a step is never kept; "
                      "the failures count toward max_errors.", record["step"], len(infra), cause)

    # ----- state -----------------------------------------------------------------------------------
    def _values(self) -> dict[str, Any]:
        return {p.name: p.value for p in self.target.parameters() if p.trainable}

    def _record(self, record: dict[str, Any], step: int) -> None:
        self.history.append(record)
        if self.store:
            self.store.append_history(record)
            self.store.write_checkpoint(self._checkpoint(step, "running"))

    def _checkpoint(self, step: int, status: str, done: bool = False) -> dict[str, Any]:
        return {"step": step, "current": self._values(), "best": self.best_values, "best_score": self.best_score,
                "current_score": self.current_score, "initial_score": self.initial_score,
                "optimizer": self.optimizer.state_dict(), "usage": self.usage.to_dict(), "errors": self.errors,
                "evaluations": self.evaluations, "status": status, "done": done, "time": time.time()}


# ----- small helpers ---------------------------------------------------------------------------------
def _validated(target: Target, values: dict[str, Any]) -> dict[str, Any]:
    """Values from a checkpoint pass validation again before they touch the framework."""
    by_name = {p.name: p for p in target.parameters()}
    unknown = set(values) - set(by_name)
    if unknown:
        raise ValueError(f"the checkpoint names parameters the target does not have: {sorted(unknown)}")
    return {name: by_name[name].validate(value) for name, value in values.items()}


def _invalid(target: Target) -> dict[str, str]:
    """Parameters whose live value fails validation now (LLM-written code may have written around us)."""
    bound = getattr(target, "bound", None)
    if bound is not None and hasattr(bound, "invalid"):
        return bound.invalid()
    problems: dict[str, str] = {}
    for parameter in target.parameters():
        try:
            parameter.validate(parameter.value)
        except Exception as exc:
            problems[parameter.name] = str(getattr(exc, "reason", exc))
    return problems


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=repr)


def _error_text(output: Any) -> str:
    return f"{type(output).__name__}: {output}" if isinstance(output, BaseException) else str(output)


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
