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

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import dspy
from dspy.teleprompt import Teleprompter

from opto_adapters.dspy.deploy import save_optimized, sidecar_path, write_sidecar
from opto_adapters.dspy.metric import adapt_metric
from opto_adapters.dspy.parameters import ProgramParameters
from opto_adapters.dspy.target import ExampleError, ProgramTarget
from opto_core.engine.settings import Settings
from opto_core.kernel.binding import UnknownParameters, WriteError
from opto_core.kernel.parameters import InvalidValue

log = logging.getLogger("opto.dspy")

AUTO_STEPS = {"light": 5, "medium": 10, "heavy": 20}
#: OptoPrime's memory (past values and feedback it sees) unless ``memory_size`` is set.
DEFAULT_MEMORY = 5


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
    the program keeps using its own DSPy LM.

    The run's settings are the core's `opto_core.engine.settings.Settings`: pass one as ``settings=``,
    and/or any of its fields as keywords (``max_steps``, ``batch_size``, ``num_threads``,
    ``max_errors``, ``seed``, ``run_dir``, ``max_llm_calls``, ``target_score``, ``keep``, ...).
    DSPy-style spellings are mapped onto it in `_settings`: ``auto`` (light/medium/heavy steps),
    ``log_dir`` (= ``run_dir``; reusing it resumes the run), and ``num_threads``/``max_errors``
    left unset take DSPy's own settings (``dspy.configure(num_threads=..., max_errors=...)``).

    Options of this adapter, not of the run: ``include``/``exclude`` select parameters by name
    or glob (``"*.demos"``; the rest stay visible, frozen), ``optimize_lm_settings``,
    ``optimize_demos``, ``lm_bounds``, ``label_feedback``; and of the default optimizer
    (OptoPrime): ``token_budget``, ``temperature`` and ``max_answer_tokens`` (its own
    sampling); ``optimizer`` is a factory ``(parameters, llm) -> Optimizer`` to use another one.
    """

    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        llm: Any = None,
        *,
        settings: Settings | None = None,
        auto: str | None = None,
        log_dir: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        optimize_lm_settings: bool = True,
        optimize_demos: bool = True,
        lm_bounds: dict[str, tuple[float, float]] | None = None,
        label_feedback: bool = True,
        token_budget: int = 8000,
        temperature: float | None = None,
        max_answer_tokens: int | None = None,
        optimizer: Callable[..., Any] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if metric is not None and not callable(metric):
            raise TypeError(f"metric must be callable, got {type(metric).__name__}")
        self.metric = metric
        self.llm = llm
        self.settings, self._from_dspy = _settings(settings, auto, log_dir, overrides)
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude) if exclude is not None else None
        self.optimize_lm_settings = optimize_lm_settings
        self.optimize_demos = optimize_demos
        self.lm_bounds = lm_bounds
        self.label_feedback = label_feedback
        self.token_budget = token_budget
        self.temperature = temperature
        self.max_answer_tokens = max_answer_tokens
        self.optimizer = optimizer

    def __getattr__(self, name: str) -> Any:  # tp.max_steps, tp.run_dir, ...: the settings' fields
        settings = self.__dict__.get("settings")
        if settings is not None and name in Settings.fields():
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        valset: Sequence[Any] | None = None,
        teacher: Any = None,
        metric: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Return an optimized copy of ``student`` (which is left untouched)."""
        from opto_core.engine.loop import optimize

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
        target = ProgramTarget(
            program,
            include=self.include,
            exclude=self.exclude,
            optimize_lm_settings=self.optimize_lm_settings,
            optimize_demos=self.optimize_demos,
            lm_bounds=self.lm_bounds,
            name=type(student).__name__,
        )
        for label, examples in (("trainset", trainset), ("valset", list(valset or []))):
            for index, example in enumerate(examples):
                try:
                    target.inputs_of(example)
                except ExampleError as exc:
                    raise ExampleError(f"{label}[{index}]: {exc}") from None
        if target.context.get("lm") is None and dspy.settings.lm is None:
            without = [name for name, predictor in target.params.predictors if predictor.lm is None]
            if without:
                raise ValueError(
                    f"no LM for the predictors {without}: set one with dspy.configure(lm=dspy.LM(...)), "
                    "with dspy.context(lm=...) around compile, or with program.set_lm(...)"
                )
        optimizer = self._optimizer(target)
        settings = self.run_settings()
        result = optimize(target, trainset, feedback_fn, optimizer, list(valset) if valset else None, settings=settings)
        run_dir = settings.run_dir
        program.score = result.best_score
        program.opto_history = result.history  # not .history: DSPy appends its LM calls there
        program.opto_report = result.run_dir
        program.opto_result = result
        program.candidate_programs = self._candidates(student, result)
        self._save(program, Path(run_dir))
        if result.stopped_reason == "max_errors":
            last = _last_failure(result.history)
            raise OptimizationStopped(
                f"stopped: more than max_errors={settings.max_errors} runs failed"
                + (f" (last: {last})" if last else "")
                + f"; every finished step is saved in {run_dir} (the best program so far is on this error's "
                ".program; compile again with run_dir=... to resume)",
                program,
                run_dir,
                result,
            )
        return program

    def run_settings(self) -> Settings:
        """The settings of the next run: DSPy's defaults filled in where the user left them to DSPy."""
        filled: dict[str, Any] = {}
        if "num_threads" in self._from_dspy:
            filled["num_threads"] = max(1, int(dspy.settings.get("num_threads", 8) or 1))
        if "max_errors" in self._from_dspy:
            filled["max_errors"] = int(dspy.settings.get("max_errors", 10) or 10)
        if self.settings.run_dir is None:
            filled["run_dir"] = tempfile.mkdtemp(prefix="opto-dspy-")
        return Settings.build(self.settings, **filled)

    # ----- pieces --------------------------------------------------------------------------------------
    def _optimizer(self, target: ProgramTarget) -> Any:
        if self.optimizer is not None:
            return self.optimizer(target.parameters(), self._llm())
        from opto_core.optimizers.optoprime import OptoPrime

        memory = self.settings.memory_size if self.settings.memory_size is not None else DEFAULT_MEMORY
        return OptoPrime(
            target.parameters(),
            self._llm(),
            memory_size=memory,
            token_budget=self.token_budget,
            temperature=self.temperature,
            max_answer_tokens=self.max_answer_tokens,
        )

    def _llm(self) -> Any:
        if self.llm is None:
            from opto_core.llm.client import OpenAIChat

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
                current = params.values(trainable_only=False)
                params.apply({k: v for k, v in values.items() if current.get(k) != v}, allow_frozen=True)
            except (InvalidValue, UnknownParameters, WriteError) as exc:  # reported, not fatal
                log.warning("could not rebuild the candidate of step %s: %s", record.get("step"), exc)
                continue
            candidates.append(
                {
                    "score": score,
                    "program": program,
                    "step": record.get("step"),
                    "values": values,
                    "kept": record.get("kept", True),
                }
            )
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
            write_sidecar(program, sidecar_path(path))


def _settings(
    settings: Settings | None, auto: str | None, log_dir: str | None, overrides: dict[str, Any]
) -> tuple[Settings, set[str]]:
    """The one place DSPy-style arguments become `Settings`; also which fields DSPy's own settings fill.

    ``auto`` picks ``max_steps`` (unless given), ``log_dir`` is ``run_dir``, and ``num_threads``
    or ``max_errors`` that are neither given nor in ``settings`` (or given as ``None``) are taken
    from ``dspy.settings`` when ``compile`` runs.
    """
    if auto is not None and auto not in AUTO_STEPS:
        raise ValueError(f"auto must be one of {sorted(AUTO_STEPS)} or None, got {auto!r}")
    overrides = dict(overrides)
    if log_dir is not None:
        overrides.setdefault("run_dir", log_dir)
    if overrides.get("max_steps") is None:
        overrides.pop("max_steps", None)
        if auto is not None or settings is None:
            overrides["max_steps"] = AUTO_STEPS[auto or "light"]
    from_dspy = set()
    for name in ("num_threads", "max_errors"):
        if overrides.get(name, ...) is None or (name not in overrides and settings is None):
            overrides.pop(name, None)
            from_dspy.add(name)
    return Settings.build(settings, **overrides), from_dspy


def _last_failure(history: list[dict[str, Any]]) -> str:
    for record in reversed(history):
        for feedback in record.get("feedback") or []:
            if str(feedback.get("text", "")).startswith("The run raised"):
                return feedback["text"]
    return ""
