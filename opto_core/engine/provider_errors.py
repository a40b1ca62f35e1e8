"""Provider errors: a run that failed because the model provider did, never the workflow's fault.

A workflow that calls a hosted model meets HTTP 500s, 429 rate limits, "overloaded" answers,
timeouts and dropped connections, and at a concurrency of 8 to 64 it meets them all the time.
Such a run says nothing about the workflow's prompts or code, so it must never be judged: it is
retried, and if it still fails, it is an infrastructure failure (the step rolls back and says why).
The workflow's own exceptions (a tool that raised, a parse error) stay feedback for the optimizer.

`provider_failure` recognises the exceptions of the clients people use, by type name and status,
so none of them has to be installed: ``openai`` (and LangChain, AutoGen and AG2, which raise its
errors as they are), ``litellm`` (DSPy's client; its errors subclass openai's), ``anthropic``
(``OverloadedError``, 529), ``httpx``, ``requests`` and ``aiohttp``, with the cause chain,
exception groups and tenacity's ``RetryError`` looked through, and AgentChat's re-raised text
(``RuntimeError("RateLimitError: Error code: 429 ...")``) read as a last resort.

`retry_provider_failures` runs the failed examples of a batch again with backoff (tenacity's
exponential backoff with jitter, or the server's ``Retry-After`` when it says more), until the
retry window or the run's deadline, whichever comes first. A ``Retry-After`` that would end past
it stops the retries at once instead of sleeping into the deadline.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import tenacity

from opto_core.llm.retry_after import capped, retry_after_seconds

log = logging.getLogger("opto")

__all__ = [
    "ProviderFailure",
    "ProviderUnavailable",
    "RetryReport",
    "describe_failures",
    "provider_failure",
    "provider_failures",
    "provider_summary",
    "retry_provider_failures",
]

#: What each kind of failure is called in a message ("rate limited: 12 of 12 runs got HTTP 429").
HEADLINES = {
    "rate_limited": "rate limited",
    "overloaded": "provider overloaded",
    "server_error": "provider error",
    "timeout": "provider timeouts",
    "connection": "provider unreachable",
    "quota": "quota exhausted",
}

_RATE_LIMIT_NAMES = {"RateLimitError", "TooManyRequests", "ResourceExhausted", "CallerCredentialRateLimitError"}
_OVERLOADED_NAMES = {"OverloadedError"}
_SERVER_NAMES = {
    "InternalServerError",
    "ServiceUnavailableError",
    "BadGatewayError",
    "ServiceUnavailable",
    "MidStreamFallbackError",
}
_TIMEOUT_NAMES = {
    "APITimeoutError",
    "TimeoutException",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "ServerTimeoutError",
}
_CONNECTION_NAMES = {
    "APIConnectionError",
    "ConnectError",
    "ReadError",
    "WriteError",
    "RemoteProtocolError",
    "NetworkError",
    "ServerDisconnectedError",
    "ClientConnectorError",
    "ClientOSError",
    "ChunkedEncodingError",
}
#: Modules whose exception named ``Timeout``/``ConnectionError`` is a transport failure (requests).
_TRANSPORT_MODULES = ("requests", "urllib3", "httpx", "httpcore", "aiohttp", "openai", "anthropic", "litellm")
#: AgentChat re-raises an agent's failure as RuntimeError("<Type>: <message>..."): the type and status survive.
_TEXT = re.compile(
    r"^(?:[\w.]+\.)?(RateLimitError|InternalServerError|ServiceUnavailableError|BadGatewayError|"
    r"OverloadedError|APIStatusError|APITimeoutError|APIConnectionError)\b:?(.*)$"
)
_STATUS_TEXT = re.compile(r"Error code: (\d{3})")


@dataclass(frozen=True)
class ProviderFailure:
    """Why a run failed on the provider: ``kind`` (see `HEADLINES`), the HTTP status when there
    was one, the seconds the server asked to wait (``Retry-After``), and the error's text."""

    kind: str
    status: int | None = None
    retry_after: float | None = None
    message: str = ""

    @property
    def transient(self) -> bool:
        """Worth retrying: everything but an exhausted quota (retrying cannot refill it)."""
        return self.kind != "quota"

    @property
    def label(self) -> str:
        """What the run got, as a message says it: "HTTP 429", "a timeout", "a connection error"."""
        if self.kind == "timeout" and self.status is None:
            return "a timeout"
        if self.kind == "connection":
            return "a connection error"
        if self.kind == "overloaded":
            return f"HTTP {self.status} (overloaded)" if self.status else "an 'overloaded' answer"
        if self.kind == "quota":
            return f"HTTP {self.status or 429} (quota exhausted)"
        return f"HTTP {self.status}" if self.status else HEADLINES[self.kind]


def _status(exc: BaseException) -> int | None:
    for value in (
        getattr(exc, "status_code", None),
        getattr(getattr(exc, "response", None), "status_code", None),
        getattr(exc, "status", None),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _names(exc: BaseException) -> set[str]:
    carried = getattr(exc, "type_names", None)  # a stand-in for an exception that could not travel (Ray)
    names = {cls.__name__ for cls in type(exc).__mro__}
    return names | set(carried) if isinstance(carried, (list, tuple)) else names


def _module_of(exc: BaseException) -> str:
    return type(exc).__module__.split(".")[0]


def _text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    try:
        return f"{exc} {body if body is not None else ''}"
    except Exception:  # a broken __str__ must not break classification
        return type(exc).__name__


def _one(exc: BaseException) -> ProviderFailure | None:
    """The provider failure ``exc`` itself is, ignoring its causes."""
    carried = getattr(exc, "provider_failure", None)  # a stand-in that crossed a process boundary
    if isinstance(carried, ProviderFailure):
        return carried
    names, status = _names(exc), _status(exc)
    text = _text(exc)
    if status is None and names & (_RATE_LIMIT_NAMES | _OVERLOADED_NAMES | _SERVER_NAMES):
        found = _STATUS_TEXT.search(text)  # an exception rebuilt from its text (a worker process's)
        status = int(found.group(1)) if found else None
    lowered = text.lower()
    message = text.strip()[:300]
    if (
        names & _CONNECTION_NAMES
        and "APIConnectionError" in names
        and exc.__cause__ is not None
        and not isinstance(exc.__cause__, OSError)
        and _module_of(exc.__cause__) not in _TRANSPORT_MODULES
    ):
        return None  # the SDK wraps ANY error raised while sending (a test's replay miss, say): not the network
    if status == 429 or names & _RATE_LIMIT_NAMES:
        if "insufficient_quota" in lowered or "exceeded your current quota" in lowered:
            return ProviderFailure("quota", status or 429, None, message)
        return ProviderFailure("rate_limited", status or 429, retry_after_seconds(exc), message)
    if status == 529 or names & _OVERLOADED_NAMES or (status is not None and status >= 500 and "overloaded" in lowered):
        return ProviderFailure("overloaded", status, retry_after_seconds(exc), message)
    if status is not None and status >= 500 or names & _SERVER_NAMES:
        return ProviderFailure("server_error", status, retry_after_seconds(exc), message)
    if status == 408 or names & _TIMEOUT_NAMES or ("Timeout" in names and _module_of(exc) in _TRANSPORT_MODULES):
        return ProviderFailure("timeout", status if status == 408 else None, None, message)
    if (
        names & _CONNECTION_NAMES
        or isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ConnectionRefusedError))
        or ("ConnectionError" in names and _module_of(exc) in _TRANSPORT_MODULES)
    ):
        return ProviderFailure("connection", None, None, message)
    if isinstance(exc, RuntimeError):  # AgentChat's re-raised text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        found = _TEXT.match(first)
        if found:
            code = _STATUS_TEXT.search(first)
            replayed = ProviderFailure("server_error", int(code.group(1)) if code else None, None, first[:300])
            kind = {
                "RateLimitError": "rate_limited",
                "OverloadedError": "overloaded",
                "APITimeoutError": "timeout",
                "APIConnectionError": "connection",
            }.get(found.group(1))
            if replayed.status == 429:
                kind = "rate_limited"
            elif replayed.status is not None and replayed.status < 500 and kind is None:
                return None  # a 4xx: the request's fault, feedback
            return ProviderFailure(
                kind or ("overloaded" if "overloaded" in first.lower() else "server_error"),
                replayed.status,
                None,
                first[:300],
            )
    return None


def _linked(exc: BaseException) -> list[BaseException]:
    """The exceptions ``exc`` wraps: cause, context, an exception group's members, tenacity's last attempt."""
    found: list[BaseException] = []
    last = getattr(exc, "last_attempt", None)  # tenacity.RetryError
    if last is not None and callable(getattr(last, "exception", None)):
        try:
            inner = last.exception()
        except Exception:
            inner = None
        if isinstance(inner, BaseException):
            found.append(inner)
    members = getattr(exc, "exceptions", None)  # ExceptionGroup
    if isinstance(members, (list, tuple)):
        found.extend(m for m in members if isinstance(m, BaseException))
    found.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)
    return found


def provider_failure(exc: BaseException | None) -> ProviderFailure | None:
    """The `ProviderFailure` behind ``exc`` (itself or anything it wraps), or None when the run failed
    for the workflow's own reasons."""
    if not isinstance(exc, BaseException):
        return None
    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    while queue and len(seen) < 16:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found = _one(current)
        if found is not None:
            return found
        queue.extend(_linked(current))
    return None


def provider_failures(evaluations: Sequence[Any]) -> list[ProviderFailure]:
    """The provider failure of every evaluation that failed on the provider."""
    found = []
    for evaluation in evaluations:
        if getattr(evaluation, "failed", False):
            failure = provider_failure(evaluation.output)
            if failure is not None:
                found.append(failure)
    return found


def describe_failures(failures: Sequence[ProviderFailure], total: int) -> str:
    """One line a person can read: "rate limited: 12 of 12 runs got HTTP 429"."""
    if not failures:
        return ""
    kinds = Counter(f.kind for f in failures)
    labels = Counter(f.label for f in failures)
    head = HEADLINES[next(iter(kinds))] if len(kinds) == 1 else "provider errors"
    if len(labels) == 1:
        return f"{head}: {len(failures)} of {total} runs got {next(iter(labels))}"
    parts = ", ".join(f"{count} got {label}" for label, count in labels.most_common())
    return f"{head}: {len(failures)} of {total} runs failed on the model provider ({parts})"


class ProviderUnavailable(RuntimeError):
    """Every run of an evaluation failed on the model provider, retries included: nothing can be judged."""


def provider_summary(evaluations: Sequence[Any]) -> str:
    """`describe_failures` for a batch of evaluations ("" when none failed on the provider)."""
    return describe_failures(provider_failures(evaluations), len(evaluations))


@dataclass
class RetryReport:
    """What retrying a batch's provider failures did: rounds run, seconds waited, and why it stopped."""

    rounds: int = 0
    waited: float = 0.0
    stopped: str = ""
    retried_examples: set[int] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "waited_seconds": round(self.waited, 3),
            "stopped": self.stopped,
            "examples": sorted(self.retried_examples),
        }


def retry_provider_failures(
    evaluations: list[Any],
    rerun: Callable[[list[int]], list[Any]],
    *,
    until: float | None,
    deadline_name: str = "the retry window",
    halt: threading.Event | None = None,
    backoff: tuple[float, float] = (1.0, 30.0),
    on_wait: Callable[[str, float], None] | None = None,
) -> RetryReport | None:
    """Run again the evaluations (positions in ``evaluations``) that failed on the provider, in place.

    ``rerun(positions)`` evaluates those positions again and returns their new evaluations, in
    order. Waits follow tenacity's exponential backoff with jitter, or the longest ``Retry-After``
    of the failed runs when it asks for more; retrying stops when every run succeeded (or failed for
    its own reasons), when ``until`` (a `time.monotonic` instant, ``deadline_name`` says what it is)
    would pass before the next attempt, or when ``halt`` is set (Ctrl-C, the STOP file).
    ``on_wait(message, seconds)`` hears of each wait before it starts. Returns None when nothing
    failed on the provider.
    """

    def pending() -> list[int]:
        return [
            i
            for i, e in enumerate(evaluations)
            if getattr(e, "failed", False) and (f := provider_failure(e.output)) is not None and f.transient
        ]

    if not pending():
        return None
    report = RetryReport()
    backoff_wait = tenacity.wait_random_exponential(multiplier=backoff[0], max=backoff[1])
    plan: dict[str, float] = {}
    calls = [0]

    def attempt() -> list[int]:
        positions = pending()
        calls[0] += 1
        if calls[0] == 1 or (halt is not None and halt.is_set()):
            return positions  # the executor's own attempt (wait before the first retry), or a stop request
        report.rounds += 1
        fresh = rerun(positions)
        for position, evaluation in zip(positions, fresh):
            before = evaluations[position]
            failure = provider_failure(before.output)
            evaluation.retried = [
                *getattr(before, "retried", []),
                *getattr(evaluation, "retried", []),
                f"{failure.label if failure else 'provider error'} (run again after {plan.get('wait', 0.0):.1f} s)",
            ]
            evaluations[position] = evaluation
            report.retried_examples.add(getattr(evaluation, "index", position))
        return pending()

    def stop(state: tenacity.RetryCallState) -> bool:
        positions = state.outcome.result() if state.outcome is not None and not state.outcome.failed else []
        if halt is not None and halt.is_set():
            report.stopped = "stopped by request"
            return True
        failures = [provider_failure(evaluations[p].output) for p in positions]
        asked = max((f.retry_after for f in failures if f is not None and f.retry_after is not None), default=None)
        remaining = None if until is None else until - time.monotonic()
        wait = capped(asked, backoff_wait(state), remaining)
        if wait is None:
            report.stopped = (
                f"the server asked to wait {asked:g} s, past {deadline_name}"
                if asked is not None and remaining is not None and asked > remaining
                else f"retried until {deadline_name}"
            )
            return True
        plan["wait"], plan["asked"] = wait, asked if asked is not None and wait == asked else -1.0
        return False

    def wait(state: tenacity.RetryCallState) -> float:
        return plan.get("wait", 0.0)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        positions = state.outcome.result() if state.outcome is not None else []
        failures = [f for f in (provider_failure(evaluations[p].output) for p in positions) if f is not None]
        message = describe_failures(failures, len(evaluations))
        log.warning(
            "%s; running them again in %.1f s%s",
            message,
            plan["wait"],
            " (the server's Retry-After)" if plan["asked"] >= 0 else "",
        )
        if on_wait is not None:
            on_wait(message, plan["wait"])

    def sleep(seconds: float) -> None:
        report.waited += seconds
        if halt is not None:
            halt.wait(seconds)
        else:
            time.sleep(seconds)

    retrying = tenacity.Retrying(
        stop=stop,
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        retry=tenacity.retry_if_result(bool),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
    )
    left = retrying(attempt)
    if not left and not report.stopped:
        report.stopped = "every retried run got an answer"
    return report
