"""The optimization loop, written once for every adapter.

One step: run a minibatch of training examples with tracing, get feedback on each output,
trace it back (`backward`), let the optimizer propose new values, (optionally) let a person
approve them, apply them, evaluate, and keep them only under the keep rule (by default: the score
did not drop); otherwise roll back. The best values seen are applied at the end.

What makes it safe to leave running:
- a failed evaluation is never progress: runs that failed for reasons outside the workflow's
  logic (event loop, connection, the adapter) make the step roll back, and count as errors;
- every parameter holds, after each batch of runs, exactly what the loop set (`opto_core.engine.guard`):
  LLM-written code runs there and could write around the optimizer; such runs fail, the write is
  undone and the step rolls back (a value left invalid is caught again by validation);
- a run whose every evaluation failed outside the workflow ends as ``all_runs_failed``, not as a
  success; values read from a checkpoint are validated before anything runs (`CorruptRun` otherwise);
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

from opto_core.engine import events
from opto_core.engine.coverage import Coverage
from opto_core.engine.executors import (
    Evaluation,
    EvaluationTimeout,
    ThreadExecutor,
    make_executor,
)
from opto_core.engine.fingerprint import WorkflowChanged, differences, fingerprint
from opto_core.engine.guard import ValueGuard, failed_evaluations, wrote_around_reason
from opto_core.engine.outcome import where_scored
from opto_core.engine.provider_errors import ProviderUnavailable, provider_summary, retry_provider_failures
from opto_core.engine.records import INITIAL, STEP, Checkpoint, StepRecord
from opto_core.engine.rundir import CorruptRun, RunDir
from opto_core.engine.settings import Settings
from opto_core.engine.target import Target
from opto_core.engine.tracking import make_tracker
from opto_core.kernel.backward import BackwardError, ProblemInstance, backward
from opto_core.kernel.bounds import MAX_FEEDBACK_TEXT, bound_text
from opto_core.kernel.code_policy import apply_policy
from opto_core.kernel.redact import REDACTOR, install_log_filter, redact, scrub_url
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
    #: where ``best_score`` was measured ("on the validation set", "on the training set, re-scored at the
    #: end with the best values", ...) and where ``initial_score`` was ("the validation set (4 examples)")
    best_score_on: str = ""
    scored_on: str = ""

    def summary(self) -> str:
        """Start score, best score and where it was measured, what changed, and why the run stopped
        (secrets redacted: it is printed, logged and tracked)."""
        from opto_core.engine.outcome import outcome_of

        return redact(
            outcome_of(
                self.history,
                start_score=self.initial_score,
                best_score=self.best_score,
                best_values=self.best_values,
                best_on=self.best_score_on,
                stopped=self.stopped_reason,
                error=self.error,
                max_steps=self.meta.get("max_steps"),
            ).text()
        )

    @property
    def records(self) -> list[StepRecord]:
        """``history`` as typed records (`opto_core.engine.records.StepRecord`)."""
        return [StepRecord.from_dict(record) for record in self.history]

    @property
    def failed(self) -> bool:
        """Whether the run stopped on an error (API failure, too many failed runs, invalid values)."""
        return self.stopped_reason in ERROR_STOPS

    def save_values(self, path: str, **meta: Any) -> Any:
        """Write ``best_values`` as an ``opto-values/1`` file, for the adapters' ``apply_values``."""
        from opto_core.kernel.values import save_values

        return save_values(path, self.best_values, {**self.meta, "score": self.best_score, "steps": self.steps, **meta})


#: Stop reasons that mean the run did not end as planned (the CLI exits non-zero on them).
ERROR_STOPS = ("optimizer_error", "max_errors", "invalid_values", "all_runs_failed", "provider_error")


def mean_score(evaluations: Sequence[Evaluation]) -> float | None:
    """The mean score of the runs that say something about the workflow (infrastructure failures say nothing)."""
    scores = [
        e.feedback.score for e in evaluations if e.feedback.score is not None and e.error_kind != "infrastructure"
    ]
    return sum(scores) / len(scores) if scores else None


def evaluate(
    target: Target,
    examples: Sequence[Any],
    feedback_fn: FeedbackFn,
    *,
    num_threads: int = 1,
    failure_score: float = 0.0,
    indices: Sequence[int] | None = None,
) -> list[Evaluation]:
    """Run every example (in ``num_threads`` threads) and collect its feedback, in order."""
    indices = list(indices) if indices is not None else list(range(len(examples)))
    return ThreadExecutor(num_threads).evaluate(
        target, examples, feedback_fn, indices=indices, failure_score=failure_score
    )


def optimize(
    target: Target,
    trainset: Sequence[Any],
    feedback_fn: FeedbackFn,
    optimizer: Optimizer,
    valset: Sequence[Any] | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> OptimizationResult:
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
        log.warning(
            "Ctrl-C: stopping; the runs in flight are cancelled and this step rolls back (press again to abort)"
        )
        if self._on_request is not None:
            self._on_request()

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _StopFileWatch:
    """Cancels the batch in flight as soon as a ``STOP`` file appears (the step then rolls back)."""

    def __init__(self, store: RunDir, executor: Any, every: float = 0.5) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(store, executor, every), daemon=True, name="opto-stop-watch"
        )
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

    def __init__(
        self,
        target: Target,
        trainset: Sequence[Any],
        feedback_fn: FeedbackFn,
        optimizer: Optimizer,
        valset: Sequence[Any] | None,
        settings: Settings,
    ) -> None:
        if not trainset:
            raise ValueError("optimize needs a non-empty trainset")
        self.target, self.trainset, self.feedback_fn, self.optimizer = target, list(trainset), feedback_fn, optimizer
        self.valset = list(valset) if valset else None
        self.settings = settings
        parameters = target.parameters()
        if not any(p.trainable for p in parameters):
            raise ValueError("the target has no trainable parameter")
        apply_policy(parameters, settings.code_policy)  # every code value is checked statically before it runs
        install_log_filter()  # no log line of this process shows a secret
        clients = getattr(target, "clients", None)
        REDACTOR.discover(target, optimizer, *(clients() if callable(clients) else ()))  # keys, headers
        if settings.memory_size is not None:
            if isinstance(optimizer, HasMemory):
                optimizer.resize_memory(settings.memory_size)
            else:
                log.warning(
                    "memory_size=%s is ignored: %s has no memory of past steps (leave memory_size unset for it)",
                    settings.memory_size,
                    type(optimizer).__name__,
                )
        optimizer.set_parameters(parameters)
        self.store = RunDir(settings.run_dir) if settings.run_dir else None
        self.usage = Usage()
        self.history: list[StepRecord] = []
        self.errors = 0
        self.evaluations = 0
        self.infrastructure_reported: set[str] = set()
        self.session_runs = 0  # runs made by this process, and how many failed outside the workflow
        self.infrastructure_runs = 0
        self.backward_kwargs: dict[str, Any] = {"follow": tuple(settings.follow)} if settings.follow else {}
        self.initial_score: float | None = None
        self.current_score: float | None = None
        self.best_score: float | None = None
        self.best_values: dict[str, Any] = {}
        self._cache: dict[tuple[Any, ...], list[Evaluation]] = {}
        self.guard = ValueGuard(target)
        self.deadline = time.monotonic() + settings.max_seconds if settings.max_seconds is not None else None
        self.halt = threading.Event()  # set by Ctrl-C and the STOP file: provider retries stop waiting
        self.provider_down = ""  # why the last evaluation failed entirely on the model provider
        self.events = events.Emitter(
            settings.on_event, _display() if settings.progress else None, make_tracker(settings.tracking)
        )
        self.step_now, self.phase = 0, "initial"  # what is being evaluated, for the events
        self.best_on = ""  # where best_score was measured (set at the end)
        self.error_text = ""  # why the run stopped on an error (set at the end)
        self.finished_as = ""  # why a finished run found in the run directory had stopped

    # ----- the run ---------------------------------------------------------------------------------
    def run(self) -> OptimizationResult:
        executor = make_executor(self.settings, self.target)  # first: an isolated executor forks before any thread
        self.executor = executor
        opened = False
        stopped, error, last_step = "max_steps", "", 0
        try:
            checkpoint = self.store.open(resume=not self.settings.fresh) if self.store else None
            opened = True
            if checkpoint is not None:
                self._check_workflow(checkpoint)
            self.events.emit(
                events.RunStarted(
                    int(checkpoint["step"]) if checkpoint else 0,
                    self.usage.to_dict(),
                    checkpoint.get("best_score") if checkpoint else None,
                    max_steps=self.settings.max_steps,
                    resumed=checkpoint is not None,
                    run_dir=self.settings.run_dir,
                    trainset_size=len(self.trainset),
                    valset_size=len(self.valset or []),
                )
            )
            if checkpoint is not None:
                last_step = self._resume(checkpoint)
                if checkpoint.done and last_step >= self.settings.max_steps:
                    log.warning(
                        "run directory %s already holds a finished run (%d steps, stopped: %s); nothing to "
                        "do. Pass max_steps > %d to continue it, or use a new run_dir to start over.",
                        self.settings.run_dir,
                        last_step,
                        checkpoint.status,
                        last_step,
                    )
                    stopped, self.finished_as = "already_finished", checkpoint.status
            else:
                try:
                    self._start()
                except ProviderUnavailable as exc:  # nothing was judged: no checkpoint, a rerun starts over
                    log.error("%s; stopping before the first step. Nothing was kept.", exc)
                    return self._finish("provider_error", str(exc), 0)
            if stopped != "already_finished":
                stopped, error, last_step = self._steps(last_step)
            if self._all_runs_failed() and stopped not in ERROR_STOPS:
                stopped, error = "all_runs_failed", self._all_failed_reason()
            return self._finish(stopped, error, last_step)
        finally:
            executor.close()
            if opened and self.store is not None:
                self.store.close()

    def _start(self) -> None:
        if self.store:
            described = describe(self.optimizer)
            self.store.write_config(
                {
                    **self.settings.to_config(),
                    **described,
                    "base_url": scrub_url(described["base_url"] or "") or None,
                    "parameters": [p.spec() for p in self.target.parameters()],
                    "fingerprint": fingerprint(self.target.parameters()),
                    "trainset_size": len(self.trainset),
                    "valset_size": len(self.valset or []),
                }
            )
        examples = self.valset or self.trainset
        self.step_now, self.phase = 0, "initial"
        evaluations = self._evaluate(examples, list(range(len(examples))), "val" if self.valset else "train")
        if self.provider_down:
            raise ProviderUnavailable(self.provider_down)
        covered = Coverage.of(self.target.parameters(), evaluations, follow=self.settings.follow, target=self.target)
        covered.enforce(require=self.settings.require_coverage)  # one warning, or CoverageError before the optimizer
        self.initial_score = self.current_score = self.best_score = mean_score(evaluations)
        self.best_values = self._values()
        self.optimizer.observe(self.best_values, self.initial_score)
        record = StepRecord(
            step=0,
            kind=INITIAL,
            values=self.best_values,
            scored_on=where_scored(len(self.valset or []), len(self.trainset)),
            eval_score=self.initial_score,
            best_score=self.best_score,
            usage=self.usage.snapshot(),
            evaluations=self.evaluations,
            time=time.time(),
            coverage=covered.to_dict(),
        )
        self._note_failures(record, evaluations)
        if self.store:
            record.graph = self.store.write_graph(0, evaluations[0].graph.to_json())
        self._record(record, step=0)

    def _all_runs_failed(self) -> bool:
        """Every run of this session failed outside the workflow's logic: nothing can be learned."""
        return self.session_runs > 0 and self.infrastructure_runs == self.session_runs

    def _all_failed_reason(self) -> str:
        causes = sorted(self.infrastructure_reported)
        return (
            f"every one of the {self.session_runs} runs failed outside the workflow's logic (first cause: "
            f"{causes[0] if causes else 'unknown'}); nothing was learned. Fix the cause (an endpoint, a key, the "
            f"network) and run again: the run directory resumes where it stopped"
        )

    def _check_workflow(self, checkpoint: Checkpoint) -> None:
        """Refuse to resume a run of a different workflow (`WorkflowChanged`), unless ``resume_changed``."""
        assert self.store is not None
        config = self.store.read_config()
        stored = config.get("fingerprint")
        if not isinstance(stored, dict):  # a run from before fingerprints: nothing to compare with
            return
        parameters = self.target.parameters()
        changes = differences(stored, parameters, (checkpoint.current, checkpoint.best))
        if not changes:
            return
        if not self.settings.resume_changed:
            raise WorkflowChanged(str(self.settings.run_dir), changes)
        log.warning(
            "resuming %s although the workflow changed (resume_changed=True): %s. Saved values of "
            "parameters that are gone or no longer valid are dropped.",
            self.settings.run_dir,
            "; ".join(changes),
        )
        self.store.write_config({**config, "fingerprint": fingerprint(parameters)})

    def _resume(self, checkpoint: Checkpoint) -> int:
        assert self.store is not None
        current, best = checkpoint.current, checkpoint.best
        if self.settings.resume_changed:  # only what still fits the changed workflow
            current, best = _fitting(self.target, current or {}), _fitting(self.target, best or {})
        try:  # values a checkpoint holds pass validation (the code policy included) before anything runs
            current = _validated(self.target, current)
            _validated(self.target, best)
        except (ValueError, TypeError) as exc:
            raise CorruptRun(self.store.checkpoint_path, f"holds a value the target refuses: {exc}") from None
        self.target.apply(current)
        self.optimizer.set_parameters(self.target.parameters())
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.usage = checkpoint.usage.snapshot()
        start = checkpoint.step
        self.current_score = checkpoint.current_score
        self.best_score = checkpoint.best_score
        self.best_on = checkpoint.best_score_on or ""
        self.best_values = best
        self.initial_score = checkpoint.initial_score
        self.errors = checkpoint.errors
        self.evaluations = checkpoint.evaluations
        assert self.store is not None
        self.history = self.store.truncate_history(start)
        for record in self.history:  # search-based optimizers rebuild their trials from the history
            if record.kind == INITIAL:
                self.optimizer.observe(record.values or {}, record.eval_score)
            elif record.candidate_values is not None:
                self.optimizer.observe(record.candidate_values, record.eval_score)
        log.info("resuming %s after step %d", self.settings.run_dir, start)
        return start

    def _steps(self, start: int) -> tuple[str, str, int]:
        settings = self.settings
        step = last_step = start
        watch = _StopFileWatch(self.store, self) if self.store else None
        try:
            with _Interrupt(self.cancel) as interrupt:
                while step < settings.max_steps:
                    reason = self._stop_reason(step + 1, interrupt)
                    if reason:
                        return reason, self._all_failed_reason() if reason == "all_runs_failed" else "", last_step
                    self.events.emit(
                        events.StepStarted(
                            step + 1,
                            self.usage.to_dict(),
                            self.best_score,
                            max_steps=settings.max_steps,
                            runs=self._runs_needed(step + 1),
                        )
                    )
                    try:
                        record = self._step(step + 1)
                    except OptimizerFailed as exc:
                        log.error("%s; stopping. Everything up to step %d is saved; run again to resume.", exc, step)
                        return "optimizer_error", redact(str(exc)), last_step
                    step = last_step = step + 1
                    problems = _invalid(self.target)
                    if problems:  # should never happen after the step's own check: stop rather than save it
                        return "invalid_values", f"parameters hold invalid values: {problems}", last_step
                    self.current_score = record.current_score
                    # without a validation set, scores of different batches do not compare: the last kept
                    # values are the best known
                    if record.kept and (self.valset is None or _better(self.current_score, self.best_score)):
                        self.best_score, self.best_values = self.current_score, self._values()
                    record.best_score = self.best_score
                    record.errors_total = self.errors
                    record.evaluations_total = self.evaluations
                    self._record(record, step)
                    self.events.emit(
                        events.StepDecided(
                            step,
                            self.usage.to_dict(),
                            self.best_score,
                            kept=bool(record.kept),
                            decision=record.decision or "",
                            score=record.eval_score,
                            record=record.to_dict(),
                        )
                    )
                    if settings.on_step:
                        settings.on_step(record.to_dict())
                    if record.proposal is not None and record.proposal.terminated:
                        log.info("step %d: the optimizer proposed no change", step)
                    if self.provider_down:  # every run of an evaluation failed on the provider, retries included
                        log.error(
                            "step %d: %s; stopping (the step was rolled back). Everything up to here is "
                            "saved; run again to resume.",
                            step,
                            self.provider_down,
                        )
                        return "provider_error", self.provider_down, last_step
        finally:
            if watch is not None:
                watch.stop()
        return "max_steps", "", last_step

    def _stop_reason(self, next_step: int, interrupt: _Interrupt) -> str | None:
        s = self.settings
        reason = _budget_reason(self.usage, s.max_llm_calls, s.max_tokens, s.max_cost_usd)
        if (
            reason is None
            and s.max_evaluations is not None
            and self.evaluations + self._runs_needed(next_step) > s.max_evaluations
        ):
            reason = "max_evaluations"
        if reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            reason = "max_seconds"
        if (
            reason is None
            and s.target_score is not None
            and self.best_score is not None
            and self.best_score >= s.target_score
        ):
            reason = "target_score"
        if reason is None and self.store and self.store.stop_requested:
            reason = "stop_file"
        if reason is None and interrupt.requested:
            reason = "interrupted"
        if reason is None and s.max_errors is not None and self.errors > s.max_errors:
            reason = "max_errors"
        if reason is None and self._all_runs_failed():  # no baseline, nothing to learn from: say so now
            reason = "all_runs_failed"
        return reason

    def _finish(self, stopped: str, error: str, last_step: int) -> OptimizationResult:
        final_values = self._values()
        if self.best_values and self.best_values != final_values:
            self.target.apply(_validated(self.target, self.best_values))
        self.best_on = self._rescore(stopped)
        self.error_text = error
        if self.store and self.history:  # no checkpoint before step 0 was recorded: a rerun starts over
            status = self.finished_as if stopped == "already_finished" and self.finished_as else stopped
            self.store.write_checkpoint(self._checkpoint(last_step, status, done=True))  # keeps why it ended
        meta = {
            "framework": getattr(self.target, "framework", "python"),
            "framework_version": getattr(self.target, "framework_version", ""),
            "optimizer": type(self.optimizer).__name__,
            "max_steps": self.settings.max_steps,
        }
        result = OptimizationResult(
            self.best_values,
            self.best_score,
            self.initial_score,
            [record.to_dict() for record in self.history],
            self.usage.to_dict(),
            str(self.store.path) if self.store else None,
            stopped,
            steps=len(self.history) - 1 if self.history else 0,
            final_values=final_values,
            error=error,
            evaluations=self.evaluations,
            meta=meta,
            best_score_on=self.best_on,
            scored_on=where_scored(len(self.valset or []), len(self.trainset)),
        )
        self.events.emit(events.RunFinished(last_step, self.usage.to_dict(), self.best_score, result=result))
        return result

    def _rescore(self, stopped: str) -> str:
        """Where ``best_score`` was measured, as the result says it. Without a validation set, batch
        scores do not compare with the start score (the whole training set): the best values are
        re-scored on the whole training set, unless the run stopped on an error or a request, or the
        budget or deadline leaves no room (then the score stays the last kept batch's, and says so)."""
        if stopped == "already_finished":
            return self.best_on or ""
        if self.valset is not None:
            return "on the validation set"
        start = self.history[0].get("values") if self.history else None
        if not self.history or self.best_values == start:
            return "on the training set (the start values stayed the best)"
        why_not = ""
        if stopped in ERROR_STOPS or stopped in ("interrupted", "stop_file"):
            why_not = f"the run stopped ({stopped})"
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            why_not = "the deadline (max_seconds) has passed"
        elif (
            self.settings.max_evaluations is not None
            and self.evaluations + len(self.trainset) > self.settings.max_evaluations
        ):
            why_not = "max_evaluations leaves no room"
        if not why_not:
            self.step_now, self.phase = len(self.history), "final"
            evaluations = self._evaluate(self.trainset, list(range(len(self.trainset))), "train")
            score = mean_score(evaluations)
            if score is not None and not any(e.error_kind == "infrastructure" for e in evaluations):
                self.best_score = score
                return "on the training set, re-scored at the end with the best values"
            why_not = self.provider_down or "runs failed outside the workflow"
        return f"the last kept batch (not re-scored: {why_not})"

    # ----- one step --------------------------------------------------------------------------------
    def _batch(self, step: int) -> list[int]:
        rng = random.Random(f"{self.settings.seed}:{step}")  # per step, so a resumed run samples the same batches
        return sorted(rng.sample(range(len(self.trainset)), min(self.settings.batch_size, len(self.trainset))))

    def _runs_needed(self, step: int) -> int:
        """Workflow runs the next step will make: its batch (unless already run with these values) and the check."""
        indices = self._batch(step)
        batch = 0 if self._cached(("train", tuple(indices))) is not None else len(indices)
        return batch + (len(self.valset) if self.valset is not None else len(indices))

    def _step(self, step: int) -> StepRecord:
        started = time.time()
        indices = self._batch(step)
        self.step_now, self.phase = step, "batch"
        evaluations = self._evaluate([self.trainset[i] for i in indices], indices, "train")
        batch_score = mean_score(evaluations)
        values_before = self._values()
        skipped: list[str] = []
        record = StepRecord(
            step=step,
            kind=STEP,
            time=started,
            batch=indices,
            batch_score=batch_score,
            keep_rule=self.settings.keep,
            feedback=[e.feedback.to_dict() for e in evaluations],
            values_before=values_before,
            skipped_examples=skipped,
        )
        self._note_failures(record, evaluations)
        if self.store:
            record.graph = self.store.write_graph(step, evaluations[0].graph.to_json())

        def unchanged(why: str, proposal: Proposal | None = None) -> StepRecord:
            if record.proposal is None:
                record.proposal = proposal
            record.kept, record.current_score, record.eval_score = False, self.current_score, None
            record.values_after, record.decision = values_before, why
            record.usage, record.seconds = self.usage.snapshot(), time.time() - started
            return record

        instances: list[ProblemInstance] = []
        if all(e.error_kind == "infrastructure" for e in evaluations):
            why = (
                self.provider_down or "every run of the batch failed outside the workflow's logic"
            ) + "; nothing to learn from, no proposal"
            return unchanged(why, Proposal(error=why))
        for evaluation in evaluations:  # a failure is feedback too: the optimizer reads the error
            if evaluation.error_kind == "infrastructure":  # ... unless it was not the workflow's: nothing to learn
                record["skipped_examples"].append(f"example {evaluation.index}: failed outside the workflow")
                continue
            try:
                instances.append(backward(evaluation.graph, evaluation.feedback, **self.backward_kwargs))
            except BackwardError as exc:
                skipped.append(f"example {evaluation.index}: {exc}")
        if not instances:
            why = "no example could be traced back to a trainable parameter"
            return unchanged(why, Proposal(error=why))
        self.optimizer.set_parameters(self.target.parameters())
        proposal = self._propose(step, instances)
        record.proposal = proposal
        changes = {k: v for k, v in proposal.accepted.items() if values_before.get(k) != v}
        approve = self.settings.approve
        if changes and approve is not None:
            changes = self._approve(approve, values_before, changes, record)
        if not changes:
            return unchanged(
                "the optimizer proposed no change"
                if not proposal.accepted or proposal.terminated
                else "nothing to apply"
            )
        snapshot = self.target.snapshot()
        try:
            self.target.apply(changes)
        except Exception as exc:  # an adapter refused a value validation could not foresee
            self.target.restore(snapshot)
            record.apply_error = f"{type(exc).__name__}: {exc}"
            return unchanged(f"applying the values failed: {type(exc).__name__}: {exc}")
        candidate = self._values()
        self.phase = "check"
        if self.valset is not None:
            checked = self._evaluate(self.valset, list(range(len(self.valset))), "val")
            baseline = self.current_score
        else:  # no validation set: compare on the step's own batch, before and after
            checked = self._evaluate([self.trainset[i] for i in indices], indices, "train")
            baseline = batch_score
        new_score = mean_score(checked)
        self._note_failures(record, checked, check=True)
        self.optimizer.observe(candidate, new_score)
        kept, why = self._judge(new_score, baseline, record, checked)
        if kept:
            current = new_score
        else:
            self.target.restore(snapshot)
            current = self.current_score
            self._forget(candidate)
        record.kept, record.decision, record.eval_score, record.current_score = kept, why, new_score, current
        record.candidate_values, record.values_after = candidate, self._values()
        record.usage, record.seconds = self.usage.snapshot(), time.time() - started
        return record

    def _propose(self, step: int, instances: list[ProblemInstance]) -> Proposal:
        calls = self.settings.max_llm_calls
        max_calls = None if calls is None else max(1, calls - self.usage.calls)  # 1: no retry, or the budget breaks
        self.events.emit(events.OptimizerCallStarted(step, self.usage.to_dict(), self.best_score))
        asked = time.monotonic()
        try:
            proposal = self.optimizer.step(instances, max_calls=max_calls)
        except Exception as exc:  # the LLM is down, out of quota, ...: stop cleanly, resume later
            self.events.emit(
                events.OptimizerCallFinished(
                    step,
                    self.usage.to_dict(),
                    self.best_score,
                    seconds=time.monotonic() - asked,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
            raise OptimizerFailed(f"step {step}: the optimizer failed: {type(exc).__name__}: {exc}") from exc
        self.usage.merge(proposal.usage)
        call = Usage.from_dict(proposal.usage) if proposal.usage else Usage()
        self.events.emit(
            events.OptimizerCallFinished(
                step,
                self.usage.to_dict(),
                self.best_score,
                seconds=time.monotonic() - asked,
                call_tokens=call.total_tokens,
                call_cost_usd=call.cost_usd,
            )
        )
        return proposal

    def _approve(
        self, approve: Callable[..., Any], values_before: dict[str, Any], changes: dict[str, Any], record: StepRecord
    ) -> dict[str, Any]:
        from opto_core.engine.approval import review

        by_name = {p.name: p for p in self.target.parameters()}
        approved, decisions = review(
            approve, values_before, changes, kinds={name: by_name[name].kind for name in changes}
        )
        checked: dict[str, Any] = {}
        for name, value in approved.items():
            try:
                checked[name] = by_name[name].validate(value)
            except Exception as exc:  # an edit that breaks the rules is refused like any invalid value
                decisions[name] = f"rejected: the edited value is invalid: {exc}"
        record.approval = dict(decisions)
        return {k: v for k, v in checked.items() if values_before.get(k) != v}

    def _judge(
        self, new: float | None, baseline: float | None, record: StepRecord, checked: list[Evaluation]
    ) -> tuple[bool, str]:
        """The keep rule, written out in the step record."""
        around = [e for e in checked if e.error_kind == "wrote_around"]
        if around:
            record.wrote_around = str(around[0].output)
            return False, "rolled back: a run wrote around the optimizer (see wrote_around); nothing it wrote is kept"
        problems = _invalid(self.target)
        if problems:
            record.invalid_after_run = problems
            log.error(
                "step %d: after the runs, parameters hold invalid values (%s); rolling back", record.step, problems
            )
            return False, f"rolled back: the runs left invalid values in {sorted(problems)}"
        if any(e.error_kind == "infrastructure" for e in checked):
            cause = (
                provider_summary(checked)
                or _timeouts(checked, self.settings.eval_timeout)
                or "some runs failed outside the workflow"
            )
            return False, f"rolled back: {cause}, so the score says nothing"
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

        def run(positions: list[int]) -> list[Evaluation]:
            def progress(done: int, total: int, failed: int) -> events.RunEvent:
                return events.EvaluationDone(
                    self.step_now,
                    self.usage.to_dict(),
                    self.best_score,
                    done=done,
                    total=total,
                    which=self.phase,
                    failed=failed,
                )

            with self.events.evaluation(progress, len(positions)) as counter:
                expected = self.guard.expect()
                runs = self.executor.evaluate(
                    self.target,
                    [examples[p] for p in positions],
                    self.feedback_fn,
                    indices=[indices[p] for p in positions],
                    failure_score=self.settings.failure_score,
                    values=values,
                )
                changes = self.guard.changes(expected)
                if changes:  # a run wrote a parameter behind the optimizer's back: undo it, fail the runs
                    self.guard.restore(expected)
                    reason = wrote_around_reason(changes)
                    log.error("%s", reason)
                    runs = failed_evaluations(runs, reason, self.settings.failure_score)
                counter.finish(runs)
            self.evaluations += len(runs)
            return runs

        evaluations = run(list(range(len(examples))))
        self.provider_down = self._retry_provider_failures(evaluations, run)
        self.errors += sum(e.failed for e in evaluations)
        self.session_runs += len(evaluations)
        self.infrastructure_runs += sum(e.error_kind == "infrastructure" for e in evaluations)
        if self.settings.reuse_evaluations and not any(
            e.error_kind in ("infrastructure", "wrote_around") for e in evaluations
        ):
            self._cache[key + (_key(values),)] = evaluations
            while len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
        return evaluations

    def _retry_provider_failures(
        self, evaluations: list[Evaluation], run: Callable[[list[int]], list[Evaluation]]
    ) -> str:
        """Run again, in place, what failed on the model provider (backoff, Retry-After honoured, never
        past ``provider_retry_seconds`` or the run's deadline). Returns why the whole evaluation failed
        on the provider after that ("" when at least one run did not)."""
        window = self.settings.provider_retry_seconds
        until, name = time.monotonic() + window, f"the end of the retry window (provider_retry_seconds={window:g})"
        if self.deadline is not None and self.deadline <= until:
            until, name = self.deadline, f"the run's deadline (max_seconds={self.settings.max_seconds:g})"

        def waiting(message: str, wait: float) -> None:
            self.events.emit(
                events.ProviderRetrying(
                    self.step_now, self.usage.to_dict(), self.best_score, message=message, wait=wait
                )
            )

        report = retry_provider_failures(
            evaluations, run, until=until, deadline_name=name, halt=self.halt, on_wait=waiting
        )
        summary = provider_summary(evaluations)
        if report is None or not summary or not all(e.error_kind == "infrastructure" for e in evaluations):
            return ""
        retries = (
            f"; {report.rounds} retr{'y' if report.rounds == 1 else 'ies'} over {report.waited:.1f} s"
            if report.rounds
            else ""
        )
        return f"{summary} ({report.stopped}{retries})"

    def cancel(self) -> None:
        """Stop what is in flight: the executor's runs, and any wait before retrying provider failures."""
        self.halt.set()
        self.executor.cancel()

    def _cached(self, key: tuple[Any, ...]) -> list[Evaluation] | None:
        if not self.settings.reuse_evaluations:
            return None
        return self._cache.get((*key, _key(self._values())))

    def _forget(self, values: dict[str, Any]) -> None:
        marker = _key(values)
        for key in [k for k in self._cache if k[-1] == marker]:
            del self._cache[key]

    def _note_failures(self, record: StepRecord, evaluations: Sequence[Evaluation], check: bool = False) -> None:
        """Runs an executor tried again (a dead worker, a timeout) and runs that failed outside the
        workflow, in the record (``check``: of the candidate's check runs)."""
        retried = [{"example": e.index, "causes": list(e.retried)} for e in evaluations if getattr(e, "retried", None)]
        infra = [e for e in evaluations if e.error_kind == "infrastructure"]
        errors = [{"example": e.index, "error": _error_text(e.output)} for e in infra]
        if check:
            record.check_retried, record.check_infrastructure_errors = retried or None, errors or None
        else:
            record.retried, record.infrastructure_errors = retried or None, errors or None
        if not infra:
            return
        provider = provider_summary(evaluations)
        if provider and check:
            record.check_provider_errors = provider
        elif provider:
            record.provider_errors = provider
        cause = _error_text(infra[0].output)
        if cause not in self.infrastructure_reported:  # report each cause once, not once per example
            self.infrastructure_reported.add(cause)
            log.error(
                "step %s: %d run(s) failed outside the workflow's logic: %s. Such a step is never kept; "
                "the failures count toward max_errors.",
                record.step,
                len(infra),
                cause,
            )

    # ----- state -----------------------------------------------------------------------------------
    def _values(self) -> dict[str, Any]:
        return {p.name: p.value for p in self.target.parameters() if p.trainable}

    def _record(self, record: StepRecord, step: int) -> None:
        self.history.append(record)
        if self.store:
            self.store.append_history(record)
            self.store.write_checkpoint(self._checkpoint(step, "running"))

    def _checkpoint(self, step: int, status: str, done: bool = False) -> Checkpoint:
        return Checkpoint(
            step=step,
            current=self._values(),
            best=self.best_values,
            best_score=self.best_score,
            current_score=self.current_score,
            initial_score=self.initial_score,
            optimizer=self.optimizer.state_dict(),
            usage=self.usage.snapshot(),
            errors=self.errors,
            evaluations=self.evaluations,
            status=status,
            done=done,
            time=time.time(),
            best_score_on=self.best_on,
            error=self.error_text,
        )


# ----- small helpers ---------------------------------------------------------------------------------
def _timeouts(evaluations: Sequence[Evaluation], eval_timeout: float | None) -> str:
    """Why a check failed when its runs never returned: with new values, most likely the values (a
    suggested loop that never ends), so the decision says so instead of blaming the infrastructure."""
    count = sum(isinstance(e.output, EvaluationTimeout) for e in evaluations)
    if not count:
        return ""
    limit = f"eval_timeout={eval_timeout:g} s" if eval_timeout is not None else "the time limit"
    return (
        f"{count} of {len(evaluations)} runs with the new values did not finish within {limit} (code that "
        f"never returns?)"
    )


def _validated(target: Target, values: dict[str, Any]) -> dict[str, Any]:
    """Values from a checkpoint pass validation again before they touch the framework."""
    by_name = {p.name: p for p in target.parameters()}
    unknown = set(values) - set(by_name)
    if unknown:
        raise ValueError(f"the checkpoint names parameters the target does not have: {sorted(unknown)}")
    return {name: by_name[name].validate(value) for name, value in values.items()}


def _fitting(target: Target, values: dict[str, Any]) -> dict[str, Any]:
    """The saved ``values`` that a (changed) target still has and accepts."""
    by_name = {p.name: p for p in target.parameters()}
    kept = {}
    for name, value in values.items():
        if name in by_name:
            try:
                kept[name] = by_name[name].validate(value)
            except Exception:  # a value the changed workflow no longer accepts: dropped, said in the warning
                continue
    return kept


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
    text = f"{type(output).__name__}: {output}" if isinstance(output, BaseException) else str(output)
    return bound_text(text, MAX_FEEDBACK_TEXT)  # a 10 MB error message is not copied into every record


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


def _display() -> Any:
    """The live display ``progress=True`` asks for (standard error; a live line only in a terminal)."""
    from opto_core.engine.progress import RunDisplay

    return RunDisplay()
