"""What a run writes down: one `StepRecord` per step (``history.jsonl``) and a `Checkpoint`
(``checkpoint.json``), typed, with a format version. The loop writes them, the run directory
stores them, the report and the CLI read them: every record key is named here and nowhere else.

A step record (``kind="initial"`` for the evaluation of the starting values, ``kind="step"`` for
each step) says what the step saw (batch, feedback), what the optimizer proposed, what was applied,
how it scored and why it was kept or rolled back. A checkpoint holds what a resumed run needs.

Reading is lenient, because people open these files: a value of the wrong type reads as missing
(`StepRecord.problems` says which; the value stays in ``extra`` as written), a key this version
does not know is kept in ``extra`` and written back unchanged, and records written before the format had a version (``opto-step/1``,
before issue 21) are upgraded when read.

**Adding an optional field** (what most changes need): add ``name: T | None = None`` to the
dataclass, with a comment that says what it holds, and give its reader in `_READERS` when it is
not a plain JSON value. It is written when it is not None, and reads as None from older files:
no version change. Bump `STEP_FORMAT` (or the run format) only when a field changes its meaning
or a required one appears, and upgrade the older form in `_upgrade`.

Code written against the dictionary form (``record["kept"]``, ``record.get("proposal")``) keeps
working: both classes answer ``[]``, ``get``, ``in``, ``setdefault`` and ``update`` by field
name, and keep unknown names in ``extra``. New code uses the attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping

from opto_core.llm.usage import Usage
from opto_core.optimizers.protocol import Proposal

#: The format of a step record; a line without ``format`` is ``opto-step/1`` (before issue 21).
STEP_FORMAT = "opto-step/2"
STEP_FORMATS = ("opto-step/1", STEP_FORMAT)
#: The format of a checkpoint (and of the run directory it belongs to).
RUN_FORMAT = "opto-run/1"

INITIAL = "initial"
STEP = "step"


class RecordFormatError(ValueError):
    """A record in a format this version cannot read (written by a newer version)."""


# ----- lenient readers: a wrong type reads as None ------------------------------------------------------
def finite_number(value: Any) -> float | None:
    """A finite float; a string holding one (a hand-edited file) too."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _whole(value: Any) -> int | None:
    number = finite_number(value)
    return int(number) if number is not None and number.is_integer() else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _sequence(value: Any) -> list[Any] | None:
    return list(value) if isinstance(value, list) else None


def _proposal(value: Any) -> Proposal | None:
    return Proposal.from_dict(value) if isinstance(value, Mapping) else None


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, Mapping):
        return None
    counts = [finite_number(value.get(key)) for key in ("calls", "prompt_tokens", "completion_tokens", "cost_usd")]
    calls, prompt, completion, cost = (c or 0 for c in counts)
    return Usage(int(calls), int(prompt), int(completion), float(cost))


def _json(value: Any) -> Any:
    """A field's JSON form (typed fields have ``to_dict``)."""
    return value.to_dict() if isinstance(value, (Proposal, Usage)) else value


#: fields held as a type, not as their dictionary
_TYPED: dict[str, Callable[[Any], Any]] = {"proposal": _proposal, "usage": _usage}


class _DictAccess:
    """``record["name"]`` and friends, for code written against the dictionary form of a record:
    ``record[key]`` is ``record.to_dict()[key]`` (a proposal or usage as its dictionary; a declared
    field reads like a key that is always there, None when unset), and a dictionary assigned to a
    typed field is read into its type."""

    extra: dict[str, Any]
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _declared(self, key: str) -> bool:
        return key not in ("extra", "problems") and key in self.__dataclass_fields__

    def __getitem__(self, key: str) -> Any:
        if self._declared(key):
            return _json(getattr(self, key))
        return self.extra[key]

    def keys(self) -> list[str]:
        """The keys of the JSON form (so ``{**record}`` and ``dict(record)`` give it)."""
        return list(self.to_dict())

    def __setitem__(self, key: str, value: Any) -> None:
        if not self._declared(key):
            self.extra[key] = value
        elif key in _TYPED and isinstance(value, Mapping):
            setattr(self, key, _TYPED[key](value))
        else:
            setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, values: Mapping[str, Any] | None = None, **more: Any) -> None:
        for key, value in {**dict(values or {}), **more}.items():
            self[key] = value


def _read_fields(
    cls: type, data: Mapping[str, Any], readers: Mapping[str, Callable[[Any], Any]], problems: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The declared fields of ``cls`` read from ``data``, and the rest. A value of the wrong type reads
    as None, is noted in ``problems``, and stays in the rest as written (so rewriting loses nothing)."""
    declared = {f.name for f in fields(cls) if f.name not in ("extra", "problems")}
    known: dict[str, Any] = {}
    rest = {k: v for k, v in data.items() if k not in declared}
    for name in declared & set(data):
        raw = data[name]
        value = readers.get(name, lambda v: v)(raw)
        if value is None and raw is not None:
            problems.append(f"{name}: {type(raw).__name__} {str(raw)[:60]!r} is not what this field holds")
            rest[name] = raw
        known[name] = value
    return known, rest


# ----- one step ------------------------------------------------------------------------------------------------
@dataclass
class StepRecord(_DictAccess):
    """One line of ``history.jsonl``: the initial evaluation (``kind="initial"``) or one step."""

    step: int
    kind: str  # INITIAL or STEP
    time: float | None = None  # when the step started (seconds since the epoch)
    format: str = STEP_FORMAT
    # --- the initial evaluation
    values: dict[str, Any] | None = None  # the starting values
    evaluations: int | None = None  # workflow runs so far (initial record)
    scored_on: str | None = None  # where the initial score was measured ("the validation set (4 examples)")
    coverage: dict[str, Any] | None = None  # which parameters feedback reaches (initial record; `Coverage.to_dict`)
    # --- what the step saw
    batch: list[int] | None = None  # indices of the training examples of this step
    batch_score: float | None = None  # their mean score before the proposal
    keep_rule: str | None = None  # "not_worse" or "improved"
    feedback: list[dict[str, Any]] | None = None  # one `Feedback.to_dict()` per batch example
    values_before: dict[str, Any] | None = None
    skipped_examples: list[str] | None = None  # examples that could not be traced to a parameter, and why
    graph: str | None = None  # the run directory's graph file of one traced run of the step
    # --- what was proposed and applied
    proposal: Proposal | None = None
    approval: dict[str, Any] | None = None  # a person's decision per parameter (approve=...)
    apply_error: str | None = None  # the adapter refused the values (format 1 kept it in the proposal)
    candidate_values: dict[str, Any] | None = None  # the values evaluated as this step's candidate
    # --- how it scored, and what was decided
    eval_score: float | None = None  # the candidate's score (initial record: the starting values')
    current_score: float | None = None  # the score of the values in place after the step
    best_score: float | None = None
    kept: bool | None = None
    decision: str | None = None  # why it was kept or rolled back, in words
    invalid_after_run: dict[str, Any] | None = None  # values the workflow left invalid (rolled back)
    wrote_around: str | None = None  # a run wrote a parameter around the optimizer: what it wrote (rolled back)
    values_after: dict[str, Any] | None = None
    # --- what it cost
    usage: Usage | None = None  # the optimizer's LLM use so far in the run
    seconds: float | None = None
    errors_total: int | None = None
    evaluations_total: int | None = None
    # --- runs an executor retried or that failed outside the workflow (batch, and the check: ``check_``)
    retried: list[dict[str, Any]] | None = None
    infrastructure_errors: list[dict[str, Any]] | None = None
    provider_errors: str | None = None  # the batch's runs that failed on the model provider, in words
    check_retried: list[dict[str, Any]] | None = None
    check_infrastructure_errors: list[dict[str, Any]] | None = None
    check_provider_errors: str | None = None
    #: keys this version does not declare (written by a newer version, or by a plugin), kept as they are
    extra: dict[str, Any] = field(default_factory=dict)
    #: what could not be read (wrong types), for the report; never written
    problems: list[str] = field(default_factory=list, repr=False, compare=False)

    @property
    def is_step(self) -> bool:
        return self.kind == STEP

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: set fields (the scores of its kind even when None), then ``extra``."""
        always = _ALWAYS.get(self.kind, ())
        data: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("extra", "problems"):
                continue
            value = getattr(self, f.name)
            if value is None and f.name not in always:
                continue
            data[f.name] = _json(value)
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRecord:
        """Read one record leniently (see the module's docstring); raise `RecordFormatError` for a
        format this version does not know."""
        data = _upgrade(dict(data))
        problems: list[str] = []
        known, extra = _read_fields(cls, data, _READERS, problems)
        step = _whole(known.pop("step", 0))
        if step is None:
            problems.append("step: not a whole number; read as 0")
        kind = _text(known.pop("kind", None)) or (INITIAL if step == 0 else STEP)
        known.pop("format", None)
        return cls(step=step or 0, kind=kind, **known, extra=extra, problems=problems)


#: Fields written even when None, per kind ("no score" is said, as before the records were typed).
_ALWAYS = {INITIAL: ("eval_score", "best_score"), STEP: ("batch_score", "eval_score", "current_score", "best_score")}

_READERS: dict[str, Callable[[Any], Any]] = {
    "time": finite_number,
    "format": _text,
    "values": _mapping,
    "evaluations": _whole,
    "coverage": _mapping,
    "scored_on": _text,
    "provider_errors": _text,
    "check_provider_errors": _text,
    "batch": _sequence,
    "batch_score": finite_number,
    "keep_rule": _text,
    "feedback": _sequence,
    "values_before": _mapping,
    "skipped_examples": _sequence,
    "graph": _text,
    "proposal": _proposal,
    "approval": _mapping,
    "apply_error": _text,
    "candidate_values": _mapping,
    "eval_score": finite_number,
    "current_score": finite_number,
    "best_score": finite_number,
    "kept": _flag,
    "decision": _text,
    "invalid_after_run": _mapping,
    "wrote_around": _text,
    "values_after": _mapping,
    "usage": _usage,
    "seconds": finite_number,
    "errors_total": _whole,
    "evaluations_total": _whole,
    "retried": _sequence,
    "infrastructure_errors": _sequence,
    "check_retried": _sequence,
    "check_infrastructure_errors": _sequence,
}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """An older record in today's form (the format a record was written in decides what changes)."""
    written = data.get("format", "opto-step/1")
    if written not in STEP_FORMATS:
        raise RecordFormatError(
            f"a step record in format {written!r}: this version reads "
            f"{', '.join(STEP_FORMATS)}; the run was written by a newer version of opto"
        )
    if written == "opto-step/1":
        proposal = data.get("proposal")
        if isinstance(proposal, Mapping) and "apply_error" in proposal:  # now a field of the record
            data["proposal"] = {k: v for k, v in proposal.items() if k != "apply_error"}
            data.setdefault("apply_error", proposal["apply_error"])
    data["format"] = STEP_FORMAT
    return data


# ----- the checkpoint ----------------------------------------------------------------------------------------------
@dataclass
class Checkpoint(_DictAccess):
    """``checkpoint.json``, written after every step: what a resumed run starts from."""

    step: int  # the last finished step
    current: dict[str, Any]  # the values in place
    best: dict[str, Any]  # the best values so far
    format: str = RUN_FORMAT
    best_score: float | None = None
    current_score: float | None = None
    initial_score: float | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)  # the optimizer's `state_dict()`
    usage: Usage = field(default_factory=Usage)  # the optimizer's LLM use so far
    errors: int = 0  # failed workflow runs so far
    evaluations: int = 0  # workflow runs so far
    status: str = "running"  # "running", or the reason the run stopped
    error: str = ""  # why the run stopped on an error
    best_score_on: str = ""  # where best_score was measured (`OptimizationResult.best_score_on`)
    history_chain: str = ""  # the last history line's chain link (the run directory checks the history with it)
    done: bool = False
    time: float | None = None
    #: keys this version does not declare, kept as they are
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: _json(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """A checkpoint from its JSON form; `RecordFormatError` for another format or a missing
        or broken required field (a resumed run must not guess its state)."""
        if data.get("format", RUN_FORMAT) != RUN_FORMAT:
            raise RecordFormatError(f"unsupported run format {data.get('format')!r} (this version reads {RUN_FORMAT})")
        problems: list[str] = []
        known, extra = _read_fields(cls, data, _CHECKPOINT_READERS, problems)
        missing = [name for name in ("step", "current", "best") if known.get(name) is None]
        if missing or problems:
            raise RecordFormatError(
                "a checkpoint with " + "; ".join([f"no valid {name!r}" for name in missing] + problems)
            )
        known.pop("format", None)
        for name in (
            "optimizer",
            "usage",
            "errors",
            "evaluations",
            "status",
            "done",
            "error",
            "best_score_on",
            "history_chain",
        ):
            if known.get(name) is None:
                known.pop(name, None)
        return cls(**known, extra=extra)


_CHECKPOINT_READERS: dict[str, Callable[[Any], Any]] = {
    "step": _whole,
    "current": _mapping,
    "best": _mapping,
    "format": _text,
    "best_score": finite_number,
    "current_score": finite_number,
    "initial_score": finite_number,
    "optimizer": _mapping,
    "usage": _usage,
    "errors": _whole,
    "evaluations": _whole,
    "status": _text,
    "done": _flag,
    "time": finite_number,
    "error": _text,
    "best_score_on": _text,
    "history_chain": _text,
}
