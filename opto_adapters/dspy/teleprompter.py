"""`OptoTeleprompter`: a DSPy optimizer (``dspy.teleprompt.Teleprompter``) driven by OptoPrime.

Where MIPROv2 and GEPA change instructions (and demos), this one lets OptoPrime read the
execution trace of each example (prompts, LM outputs, tool calls, the metric's feedback) and
propose new values for every parameter at once: instructions, output-field descriptions, demos,
temperature and max_tokens per predictor, and the code and descriptions of ReAct tools.

    tp = OptoTeleprompter(metric=metric, llm=OpenAIChat(model="gpt-4o-mini"), max_steps=8)
    optimized = tp.compile(program, trainset=trainset, valset=valset)
    optimized.score, optimized.candidate_programs, optimized.opto_report

Like DSPy's own optimizers, ``compile`` returns an optimized copy and leaves the student as it was.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import dspy
from dspy.teleprompt import Teleprompter

from opto_core.parameters import InvalidValue

from .metric import adapt_metric
from .parameters import ProgramParameters, save_optimized, sidecar_path
from .target import ExampleError, ProgramTarget

log = logging.getLogger("opto.dspy")

AUTO_STEPS = {"light": 5, "medium": 10, "heavy": 20}


class OptimizationStopped(RuntimeError):
    """The run stopped on its error budget (``max_errors``). Nothing is lost: ``run_dir`` holds every
    finished step, and ``program`` is a copy of the student with the best values found so far."""

    def __init__(self, message: str, program: Any, run_dir: str, result: Any) -> None:
        super().__init__(message)
        self.program = program
        self.run_dir = run_dir
        self.result = result


class OptoTeleprompter(Teleprompter):
    """Optimize a DSPy program's instructions, field descriptions, demos, LM settings and tool code.

    ``metric(gold, pred[, trace[, pred_name, pred_trace]])`` returns a bool, a number or
    ``dspy.Prediction(score=..., feedback=...)``; the feedback text reaches the optimizer.
    ``llm`` is the optimizer's model (an ``opto_core`` ChatModel; default ``OpenAIChat()``);
    the program keeps using its own DSPy LM. ``include`` / ``exclude`` select parameters by
    name or pattern (``"*.demos"``). ``run_dir`` (alias ``log_dir``) keeps checkpoints, history,
    graphs and the optimized program; reusing it resumes the run. ``temperature`` and
    ``max_answer_tokens`` are the optimizer's own sampling settings; ``optimizer`` is a factory
    ``(parameters, llm) -> Optimizer`` to use another optimizer than OptoPrime (e.g. ``OPRO``).
    """

    def __init__(self, metric: Callable[..., Any] | None = None, llm: Any = None, *, max_steps: int | None = None,
                 auto: str | None = None, batch_size: int = 4, num_threads: int | None = None, memory_size: int = 5,
                 token_budget: int = 8000, max_errors: int | None = None, run_dir: str | None = None,
                 log_dir: str | None = None, include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, optimize_lm_settings: bool = True,
                 optimize_demos: bool = True, lm_bounds: dict[str, tuple[float, float]] | None = None,
                 label_feedback: bool = True, max_llm_calls: int | None = None, max_tokens: int | None = None,
                 max_cost_usd: float | None = None, target_score: float | None = None, seed: int = 0,
                 progress: bool = False, failure_score: float = 0.0, temperature: float | None = None,
                 max_answer_tokens: int | None = None, optimizer: Callable[..., Any] | None = None) -> None:
        super().__init__()
        if auto is not None and auto not in AUTO_STEPS:
            raise ValueError(f"auto must be one of {sorted(AUTO_STEPS)} or None, got {auto!r}")
        if max_steps is not None and max_steps < 0:
            raise ValueError("max_steps must be >= 0")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if metric is not None and not callable(metric):
            raise TypeError(f"metric must be callable, got {type(metric).__name__}")
        self.metric = metric
        self.llm = llm
        self.max_steps = max_steps if max_steps is not None else AUTO_STEPS.get(auto or "light", 5)
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.memory_size = memory_size
        self.token_budget = token_budget
        self.max_errors = max_errors
        self.run_dir = run_dir or log_dir
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self.optimize_lm_settings = optimize_lm_settings
        self.optimize_demos = optimize_demos
        self.lm_bounds = lm_bounds
        self.label_feedback = label_feedback
        self.max_llm_calls = max_llm_calls
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self.target_score = target_score
        self.seed = seed
        self.progress = progress
        self.failure_score = failure_score
        self.temperature = temperature
        self.max_answer_tokens = max_answer_tokens
        self.optimizer = optimizer

    def compile(self, student: Any, *, trainset: Sequence[Any], valset: Sequence[Any] | None = None,
                teacher: Any = None, metric: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """Return an optimized copy of ``student`` (which is left untouched)."""
        from opto_core.loop import optimize

        if kwargs:
            raise TypeError(f"OptoTeleprompter.compile got unexpected arguments {sorted(kwargs)}")
        metric = metric or self.metric
        if metric is None:
            raise ValueError("no metric: pass metric= to OptoTeleprompter(...) or to compile(...)")
        feedback_fn = adapt_metric(metric, label_feedback=self.label_feedback)
        if not isinstance(student, dspy.Module):
            raise TypeError(f"the student must be a dspy.Module, got {type(student).__name__}")
        trainset = list(trainset or [])
        if not trainset:
            raise ValueError("compile needs a non-empty trainset")
        if teacher is not None:
            log.warning("OptoTeleprompter does not use a teacher program; it is ignored")
        program = student.deepcopy()
        target = ProgramTarget(program, include=self.include, exclude=self.exclude,
                               optimize_lm_settings=self.optimize_lm_settings, optimize_demos=self.optimize_demos,
                               lm_bounds=self.lm_bounds, name=type(student).__name__)
        for label, examples in (("trainset", trainset), ("valset", list(valset or []))):
            for index, example in enumerate(examples):
                try:
                    target.inputs_of(example)
                except ExampleError as exc:
                    raise ExampleError(f"{label}[{index}]: {exc}") from None
        if target.context.get("lm") is None and dspy.settings.lm is None:
            without = [name for name, predictor in target.params.predictors if predictor.lm is None]
            if without:
                raise ValueError(f"no LM for the predictors {without}: set one with dspy.configure(lm=dspy.LM(...)), "
                                 "with dspy.context(lm=...) around compile, or with program.set_lm(...)")
        optimizer = self._optimizer(target)
        run_dir = self.run_dir or tempfile.mkdtemp(prefix="opto-dspy-")
        max_errors = self.max_errors if self.max_errors is not None else int(dspy.settings.get("max_errors", 10) or 10)
        num_threads = self.num_threads or int(dspy.settings.get("num_threads", 8) or 1)
        result = optimize(target, trainset, feedback_fn, optimizer, list(valset) if valset else None,
                          max_steps=self.max_steps, batch_size=self.batch_size, num_threads=num_threads,
                          max_llm_calls=self.max_llm_calls, max_tokens=self.max_tokens,
                          max_cost_usd=self.max_cost_usd, target_score=self.target_score, run_dir=run_dir,
                          seed=self.seed, progress=self.progress, max_errors=max_errors,
                          failure_score=self.failure_score)
        program.score = result.best_score
        program.opto_history = result.history  # not .history: DSPy appends its LM calls there
        program.opto_report = result.run_dir
        program.opto_result = result
        program.candidate_programs = self._candidates(student, result)
        self._save(program, Path(run_dir))
        if result.stopped_reason == "max_errors":
            last = _last_failure(result.history)
            raise OptimizationStopped(
                f"stopped: more than max_errors={max_errors} runs failed" + (f" (last: {last})" if last else "")
                + f"; every finished step is saved in {run_dir} (the best program so far is on this error's "
                  ".program; compile again with run_dir=... to resume)", program, run_dir, result)
        return program

    # ----- pieces --------------------------------------------------------------------------------------
    def _optimizer(self, target: ProgramTarget) -> Any:
        if self.optimizer is not None:
            return self.optimizer(target.parameters(), self._llm())
        from opto_core.optimizers import OptoPrime

        return OptoPrime(target.parameters(), self._llm(), memory_size=self.memory_size,
                         token_budget=self.token_budget, temperature=self.temperature,
                         max_answer_tokens=self.max_answer_tokens)

    def _llm(self) -> Any:
        if self.llm is None:
            from opto_core.llm import OpenAIChat

            self.llm = OpenAIChat()
        return self.llm

    @staticmethod
    def _candidates(student: Any, result: Any) -> list[dict[str, Any]]:
        """Every evaluated set of values as a program, best score first (DSPy's ``candidate_programs``)."""
        seen: list[dict[str, Any]] = []
        candidates = []
        for record in result.history:
            if record.get("kind") == "initial":
                values, score = record.get("values", {}), record.get("eval_score")
            else:
                accepted = (record.get("proposal") or {}).get("accepted") or {}
                if record.get("eval_score") is None or not accepted:
                    continue
                values, score = {**record.get("values_before", {}), **accepted}, record["eval_score"]
            if values in seen:
                continue
            seen.append(values)
            program = student.deepcopy()
            params = ProgramParameters(program)
            try:
                current = params.values()
                params.apply({k: params.bindings[k].parameter().validate(v) for k, v in values.items()
                              if k in params.bindings and current.get(k) != v})
            except (InvalidValue, KeyError) as exc:  # a candidate that cannot be rebuilt is reported, not fatal
                log.warning("could not rebuild the candidate of step %s: %s", record.get("step"), exc)
                continue
            candidates.append({"score": score, "program": program, "step": record.get("step"), "values": values,
                               "kept": record.get("kept", True)})
        candidates.sort(key=lambda c: -c["score"] if c["score"] is not None else float("inf"))
        return candidates

    @staticmethod
    def _save(program: Any, run_dir: Path) -> None:
        """The optimized program in the run directory: DSPy's JSON plus the sidecar."""
        path = run_dir / "program.json"
        try:
            save_optimized(program, path)
        except Exception as exc:  # e.g. a custom-engine LM that DSPy cannot serialise: keep the sidecar
            log.warning("program.save(%s) failed (%s); writing the sidecar only", path, exc)
            sidecar_path(path).write_text(json.dumps(ProgramParameters(program).sidecar(), indent=1,
                                                     ensure_ascii=False), encoding="utf-8")


def _last_failure(history: list[dict[str, Any]]) -> str:
    for record in reversed(history):
        for feedback in record.get("feedback") or []:
            if str(feedback.get("text", "")).startswith("The run raised"):
                return feedback["text"]
    return ""
