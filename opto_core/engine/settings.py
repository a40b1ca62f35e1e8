"""The settings of an optimization run, in one place.

`optimize`, the DSPy teleprompter and the ``opto`` command all take a `Settings` (or its fields
as keyword arguments), so a new option is added here once. ``to_config`` is what the run
directory stores and ``from_config`` what ``opto resume`` reads back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

#: Rules for keeping a step's values: "not_worse" keeps a change whose score did not drop (the
#: Trace paper's greedy acceptance), "improved" only one that raised it.
KEEP_RULES = ("not_worse", "improved")


class SettingError(ValueError):
    """A setting with a value of the wrong type or out of range; the message names the setting."""


_TYPES: dict[str, tuple[type, ...]] = {
    "max_steps": (int,),
    "max_llm_calls": (int,),
    "max_tokens": (int,),
    "max_cost_usd": (int, float),
    "max_evaluations": (int,),
    "max_errors": (int,),
    "target_score": (int, float),
    "batch_size": (int,),
    "seed": (int,),
    "num_threads": (int,),
    "concurrency": (int,),
    "eval_timeout": (int, float),
    "failure_score": (int, float),
    "reuse_evaluations": (bool,),
    "nonfinite_scores": (str,),
    "keep": (str,),
    "progress": (bool,),
}
_WANTED: dict[tuple[type, ...], str] = {
    (int,): "a whole number",
    (int, float): "a number",
    (bool,): "true or false",
    (str,): "a string",
}
_OPTIONAL = {
    "max_llm_calls",
    "max_tokens",
    "max_cost_usd",
    "max_evaluations",
    "max_errors",
    "target_score",
    "concurrency",
    "eval_timeout",
}


@dataclass
class Settings:
    """Budgets, batching, evaluation, acceptance, persistence and safety of one run."""

    # budgets: the run stops, saved, when any is reached
    max_steps: int = 5
    max_llm_calls: int | None = None  # the optimizer's own LLM calls (retries included)
    max_tokens: int | None = None  # the optimizer's prompt + completion tokens
    max_cost_usd: float | None = None
    max_evaluations: int | None = None  # workflow runs (every example run counts one)
    max_errors: int | None = None  # failed runs over the whole run before it stops
    max_seconds: float | None = None  # the run's deadline (wall clock): no step starts, no retry waits past it
    target_score: float | None = None
    # batching and evaluation
    batch_size: int = 4
    seed: int = 0
    num_threads: int = 1  # the default executor's threads (= concurrency)
    executor: Any = "threads"  # "threads" | "asyncio" | "ray" | an Executor
    concurrency: int | None = None  # examples run at once (default: num_threads)
    eval_timeout: float | None = None  # seconds per example run; a timeout is that example's failure
    provider_retry_seconds: float = (
        120.0  # how long runs that failed on the model provider (5xx, 429, timeouts) are retried
    )
    isolation: Any = "auto"  # "auto" | "none" | "process" | "sandbox" | a Sandbox (engine/isolation.py)
    target_factory: Callable[[], Any] | None = field(default=None, repr=False)
    failure_score: float = 0.0
    reuse_evaluations: bool = False  # reuse a batch's runs when the same examples already ran with the same values
    nonfinite_scores: str = "error"  # "error": NaN/inf feedback raises; "failure": it counts as a failure
    follow: Sequence[str] | None = None  # graph edge kinds backward follows besides data
    require_coverage: bool = False  # True: stop before any optimizer call if feedback misses a parameter
    # acceptance
    keep: str = "not_worse"
    memory_size: int | None = None  # overrides the optimizer's memory when set
    # safety
    code_policy: Any = "strict"  # "strict" | "permissive" | a CodePolicy
    approve: Callable[..., Any] | None = field(default=None, repr=False)
    # persistence and display
    run_dir: str | None = None
    fresh: bool = False  # start over in run_dir, even if it holds a run (only our files are removed)
    resume_changed: bool = False  # resume a run_dir whose workflow changed since (see engine/fingerprint.py)
    recipe: str | None = None  # "module:function" that rebuilds the run (for `opto resume`)
    progress: bool = False
    on_step: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)
    on_event: Callable[[Any], None] | None = field(default=None, repr=False)  # typed events: engine/events.py
    tracking: Any = None  # "mlflow" (extra `mlflow`) or a tracker object: engine/tracking.py

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> Settings:
        """Raise `SettingError` (a ``ValueError``) naming the setting when a value has the wrong type or
        is out of range (a bad value in a stored config.json too)."""
        for name, kinds in _TYPES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if isinstance(value, bool) != (kinds == (bool,)) or not isinstance(value, kinds):
                wanted = _WANTED[kinds]
                raise SettingError(f"{name} must be {wanted}{' (or None)' if name in _OPTIONAL else ''}, got {value!r}")
        if self.max_steps < 0:
            raise SettingError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.batch_size < 1:
            raise SettingError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_threads < 1:
            raise SettingError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.concurrency is not None and self.concurrency < 1:
            raise SettingError(f"concurrency must be >= 1, got {self.concurrency}")
        for name in ("max_llm_calls", "max_tokens", "max_evaluations", "max_errors"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SettingError(f"{name} must be >= 0 (or None for no limit), got {value}")
        if self.max_seconds is not None and not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise SettingError(f"max_seconds must be a positive number of seconds, got {self.max_seconds}")
        if not (self.provider_retry_seconds >= 0 and math.isfinite(self.provider_retry_seconds)):
            raise SettingError(f"provider_retry_seconds must be >= 0 seconds, got {self.provider_retry_seconds}")
        if self.eval_timeout is not None and not self.eval_timeout > 0:
            raise SettingError(f"eval_timeout must be a positive number of seconds, got {self.eval_timeout}")
        if self.target_score is not None and not math.isfinite(self.target_score):
            raise SettingError(f"target_score must be a finite number, got {self.target_score}")
        if self.keep not in KEEP_RULES:
            raise SettingError(f"keep must be one of {KEEP_RULES}, got {self.keep!r}")
        from opto_core.engine.isolation import check_isolation

        check_isolation(self.isolation)
        if self.nonfinite_scores not in ("error", "failure"):
            raise SettingError(f"nonfinite_scores must be 'error' or 'failure', got {self.nonfinite_scores!r}")
        return self

    @property
    def workers(self) -> int:
        """How many examples run at once."""
        return self.concurrency if self.concurrency is not None else self.num_threads

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, settings: Settings | None = None, **overrides: Any) -> Settings:
        """``settings`` with ``overrides`` applied; an unknown name is an error listing the real ones."""
        unknown = sorted(set(overrides) - set(cls.fields()))
        if unknown:
            raise TypeError(f"unknown setting(s) {unknown}; the settings are: {', '.join(cls.fields())}")
        base = settings if settings is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base

    _RUNTIME_ONLY = (
        "target_factory",
        "approve",
        "on_step",
        "on_event",
        "progress",
        "executor",
        "code_policy",
        "fresh",
        "resume_changed",
    )

    def to_config(self) -> dict[str, Any]:
        """The JSON-able settings, for the run directory (callables and objects are left out)."""
        config = {name: getattr(self, name) for name in self.fields() if name not in self._RUNTIME_ONLY}
        config["follow"] = list(self.follow) if self.follow else None
        if isinstance(self.executor, str):
            config["executor"] = self.executor
        if isinstance(self.code_policy, str):
            config["code_policy"] = self.code_policy
        if not isinstance(self.tracking, (str, type(None))):
            config["tracking"] = None  # a tracker object is not stored; its name would be
        if self.isolation is not None and not isinstance(self.isolation, str):  # a Sandbox: stored by its level
            config["isolation"] = "sandbox"
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any) -> Settings:
        """Settings stored by `to_config` (unknown keys, from other versions, are ignored)."""
        known = {k: v for k, v in config.items() if k in cls.fields()}
        known.update(overrides)
        return cls(**known)
