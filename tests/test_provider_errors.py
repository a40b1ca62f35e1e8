"""Provider errors are infrastructure: recognised across clients, retried with Retry-After, never judged.

The model is a scripted OpenAI-compatible server on 127.0.0.1 answering 500, 429 (with Retry-After)
and 200; the workflow calls it through the real ``openai`` client (and LangChain's ChatOpenAI).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections import Counter

import httpx
import openai
import pytest
import requests
import tenacity

from opto_core import Feedback, Parameter
from opto_core.engine.executors import error_kind
from opto_core.engine.executors.common import PortableError, portable
from opto_core.engine.loop import optimize
from opto_core.engine.provider_errors import describe_failures, provider_failure
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.llm.retry_after import capped, retry_after_seconds
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM, ScriptedServer, http_error

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def _response(status, headers=None, message="boom"):
    return httpx.Response(status, headers=headers or {}, request=REQUEST, json={"error": {"message": message}})


def _status_error(cls, status, headers=None, message="boom"):
    return cls(
        f"Error code: {status} - {message}",
        response=_response(status, headers, message),
        body={"error": {"message": message}},
    )


# ----- recognising provider errors ---------------------------------------------------------------------------
def test_openai_status_errors_are_classified_by_status_and_keep_retry_after():
    limited = provider_failure(_status_error(openai.RateLimitError, 429, {"retry-after": "7"}))
    assert (limited.kind, limited.status, limited.retry_after) == ("rate_limited", 429, 7.0)
    server = provider_failure(_status_error(openai.InternalServerError, 500))
    assert (server.kind, server.status, server.label) == ("server_error", 500, "HTTP 500")
    overloaded = provider_failure(_status_error(openai.APIStatusError, 529, message="Overloaded"))
    assert overloaded.kind == "overloaded" and overloaded.transient
    quota = provider_failure(
        _status_error(openai.RateLimitError, 429, message="You exceeded your current quota (insufficient_quota)")
    )
    assert quota.kind == "quota" and not quota.transient
    assert provider_failure(openai.APITimeoutError(request=REQUEST)).kind == "timeout"
    assert provider_failure(_status_error(openai.BadRequestError, 400)) is None  # the request's fault: feedback
    assert provider_failure(_status_error(openai.NotFoundError, 404)) is None


def test_the_issue_cases_are_infrastructure_now():
    assert error_kind(_status_error(openai.InternalServerError, 500)) == "infrastructure"
    assert error_kind(_status_error(openai.RateLimitError, 429)) == "infrastructure"
    assert error_kind(ValueError("the tool could not parse 'abc'")) == "workflow"
    assert error_kind(_status_error(openai.BadRequestError, 400)) == "workflow"


def test_litellm_errors_as_dspy_raises_them():
    litellm = pytest.importorskip("litellm")
    assert (
        provider_failure(litellm.RateLimitError("slow down", llm_provider="openai", model="m")).kind == "rate_limited"
    )
    assert provider_failure(litellm.ServiceUnavailableError("down", llm_provider="openai", model="m")).status == 503
    assert (
        provider_failure(litellm.InternalServerError("oops", llm_provider="openai", model="m")).kind == "server_error"
    )
    assert provider_failure(litellm.Timeout("slow", model="m", llm_provider="openai")).kind == "timeout"
    assert provider_failure(litellm.ContextWindowExceededError("too long", model="m", llm_provider="openai")) is None


def test_transport_errors_of_httpx_and_requests_and_connection_resets():
    assert provider_failure(httpx.ReadTimeout("read timed out", request=REQUEST)).kind == "timeout"
    assert provider_failure(httpx.ConnectError("refused", request=REQUEST)).kind == "connection"
    http_503 = httpx.HTTPStatusError("503", request=REQUEST, response=_response(503))
    assert provider_failure(http_503).label == "HTTP 503"
    assert provider_failure(requests.exceptions.ConnectionError("reset")).kind == "connection"
    assert provider_failure(requests.exceptions.ReadTimeout("slow")).kind == "timeout"
    assert provider_failure(ConnectionResetError(104, "Connection reset by peer")).kind == "connection"
    assert provider_failure(TimeoutError("a tool's own timeout")) is None  # not a provider's


def test_wrapped_errors_are_found_through_chains_groups_retry_errors_and_agentchat_text():
    inner = _status_error(openai.RateLimitError, 429, {"retry-after-ms": "1500"})
    try:
        try:
            raise inner
        except openai.RateLimitError as exc:
            raise RuntimeError("the chain failed") from exc
    except RuntimeError as exc:
        chained = exc
    assert provider_failure(chained).retry_after == 1.5
    group_type = getattr(builtins, "ExceptionGroup", None) or __import__("exceptiongroup").ExceptionGroup  # 3.10
    group = group_type("team", [ValueError("x"), _status_error(openai.InternalServerError, 502)])
    assert provider_failure(group).status == 502
    future = tenacity.Future(1)
    future.set_exception(_status_error(openai.InternalServerError, 500))
    assert provider_failure(tenacity.RetryError(future)).status == 500
    # AgentChat re-raises an agent's failure as text
    text = RuntimeError("RateLimitError: Error code: 429 - {'error': 'slow down'}\nTraceback:\n  ...")
    assert provider_failure(text).kind == "rate_limited"
    assert provider_failure(RuntimeError("BadRequestError: Error code: 400 - bad")) is None
    assert provider_failure(RuntimeError("ValueError: the tool failed")) is None


def test_a_connection_error_wrapping_something_else_is_not_the_network():
    try:
        try:
            raise KeyError("request not in cassette")
        except KeyError as exc:
            raise openai.APIConnectionError(request=REQUEST) from exc
    except openai.APIConnectionError as exc:
        wrapped = exc
    assert provider_failure(wrapped) is None


def test_errors_cross_process_boundaries_with_their_classification():
    import cloudpickle

    original = _status_error(openai.RateLimitError, 429, {"retry-after": "3"})
    with pytest.raises(TypeError):  # the openai SDK's errors cannot be unpickled
        cloudpickle.loads(cloudpickle.dumps(original))
    travelled = cloudpickle.loads(cloudpickle.dumps(portable(original)))
    assert isinstance(travelled, PortableError) and "429" in str(travelled)
    assert provider_failure(travelled).retry_after == 3.0 and error_kind(travelled) == "infrastructure"
    plain = ValueError("the workflow's own")
    assert portable(plain) is plain


def test_retry_after_in_every_form_and_capped_by_the_deadline():
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2099 00:00:00 GMT"}, now=4_070_908_790.0) == 10.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-3"}) is None
    assert capped(100000, 1.0, 20.0) is None  # never sleeps past the deadline
    assert capped(2.0, 1.0, 20.0) == 2.0 and capped(None, 1.5, None) == 1.5


def test_the_message_counts_the_runs():
    failures = [provider_failure(_status_error(openai.RateLimitError, 429))] * 12
    assert describe_failures(failures, 12) == "rate limited: 12 of 12 runs got HTTP 429"
    mixed = failures[:2] + [provider_failure(_status_error(openai.InternalServerError, 500))] * 3
    assert describe_failures(mixed, 8) == (
        "provider errors: 5 of 8 runs failed on the model provider (3 got HTTP 500, 2 got HTTP 429)"
    )


# ----- the loop: retried, never judged -------------------------------------------------------------------------
class FlakyProvider:
    """Per question: the first attempt gets HTTP 500, the second 429 with Retry-After, the third the answer.
    ``broken_prompt``: a system prompt for which the provider answers 500 forever."""

    def __init__(self, retry_after: float = 0.2, broken_prompt: str | None = None, flaky: bool = True) -> None:
        self.attempts: Counter[str] = Counter()
        self.flaky = flaky
        self.retry_after = retry_after
        self.broken_prompt = broken_prompt
        self.lock = threading.Lock()

    def __call__(self, body):
        question = body["messages"][-1]["content"]
        if self.broken_prompt is not None and body["messages"][0]["content"] == self.broken_prompt:
            return http_error(500, "the server broke")
        with self.lock:
            self.attempts[question] += 1
            attempt = self.attempts[question]
        if attempt == 1 and self.flaky:
            return http_error(500, "internal error")
        if attempt == 2 and self.flaky:
            return http_error(429, "slow down", retry_after=self.retry_after)
        return question.upper()


PROMPT = Parameter("prompt", "text", "Answer in upper case.", description="the system prompt")


@op
def ask(question: str, prompt: str, base_url: str) -> str:
    """Ask the model, with the system prompt."""
    client = openai.OpenAI(base_url=base_url, api_key="scripted", max_retries=0)
    reply = client.chat.completions.create(
        model="scripted", messages=[{"role": "system", "content": prompt}, {"role": "user", "content": question}]
    )
    return reply.choices[0].message.content


class ShoutTarget(FunctionTarget):
    """A picklable target (for Ray) whose workflow asks the scripted server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        super().__init__(self.workflow, [PROMPT], input_keys=["question"])

    def workflow(self, question: str) -> str:
        return ask(question, PROMPT, self.base_url)


def shout_feedback(example, output):
    return Feedback(1.0 if output == example["question"].upper() else 0.0, "should be the question in upper case")


QUESTIONS = [{"question": q} for q in ("alpha", "beta", "gamma", "delta")]


def _suggest(prompt):
    return json.dumps({"reasoning": "try another prompt", "suggestion": {"prompt": prompt}})


def _ready_for(executor, monkeypatch):
    """Ray's workers cannot import this test module: its targets go by value."""
    if executor == "ray":
        pytest.importorskip("ray")
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        import sys

        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("executor", ["threads", "asyncio", "ray", "process"])
def test_500_then_429_with_retry_after_then_200_is_retried_and_judged_on_real_answers(executor, monkeypatch):
    _ready_for(executor, monkeypatch)
    PROMPT.value = "Answer in upper case."
    provider = FlakyProvider()
    with ScriptedServer([provider], repeat_last=True) as server:
        target = ShoutTarget(server.base_url)
        llm = ScriptedLLM([_suggest("Answer in upper case, always.")])
        isolation = {"isolation": "process"} if executor == "process" else {"isolation": "none"}
        result = optimize(
            target,
            QUESTIONS[:2],
            shout_feedback,
            OptoPrime(target.parameters(), llm),
            valset=QUESTIONS[2:],
            max_steps=1,
            batch_size=2,
            concurrency=2,
            executor="threads" if executor == "process" else executor,
            **isolation,
        )
    assert result.stopped_reason == "max_steps" and not result.failed
    assert result.initial_score == 1.0  # every run was retried until it got its answer: nothing judged on a 500
    initial, step = result.history
    assert len(initial["retried"]) == 2
    assert all(
        r["causes"][0].startswith("HTTP 500") and r["causes"][1].startswith("HTTP 429") for r in initial["retried"]
    )
    assert step["kept"] and step["eval_score"] == 1.0
    # the first three asks of each question: 500, 429, the answer; the validation set once more for the check
    assert provider.attempts == {"alpha": 3, "beta": 3, "gamma": 4, "delta": 4}


@pytest.mark.parametrize("executor", ["threads", "asyncio", "ray"])
def test_a_step_judged_only_on_5xx_runs_is_never_kept(executor, monkeypatch):
    _ready_for(executor, monkeypatch)
    PROMPT.value = "Answer in upper case."
    broken = "Answer loudly."
    provider = FlakyProvider(broken_prompt=broken, flaky=False)
    with ScriptedServer([provider], repeat_last=True) as server:
        target = ShoutTarget(server.base_url)
        llm = ScriptedLLM([_suggest(broken)])
        result = optimize(
            target,
            QUESTIONS[:2],
            shout_feedback,
            OptoPrime(target.parameters(), llm),
            valset=QUESTIONS[2:],
            max_steps=3,
            batch_size=2,
            provider_retry_seconds=1.0,
            executor=executor,
            isolation="none",
        )
    step = result.history[1]
    assert not step["kept"] and PROMPT.value == "Answer in upper case."
    assert step["decision"].startswith("rolled back: provider error: 2 of 2 runs got HTTP 500")
    assert step["check_provider_errors"] == "provider error: 2 of 2 runs got HTTP 500"
    assert result.stopped_reason == "provider_error" and result.failed
    assert result.best_values == {"prompt": "Answer in upper case."}
    assert len(result.history) == 2  # the run stopped instead of asking the optimizer again


@pytest.mark.parametrize("retry_after", ["1", "100000"])
def test_an_endpoint_answering_429_forever_stops_at_the_deadline_with_the_count(retry_after):
    PROMPT.value = "Answer in upper case."
    with ScriptedServer([http_error(429, "rate limit reached", retry_after=retry_after)], repeat_last=True) as server:
        target = ShoutTarget(server.base_url)
        result = optimize(
            target,
            QUESTIONS,
            shout_feedback,
            OptoPrime(target.parameters(), ScriptedLLM([])),
            max_steps=2,
            batch_size=4,
            max_seconds=3,
            concurrency=4,
        )
    assert result.stopped_reason == "provider_error" and result.failed
    assert result.error.startswith("rate limited: 4 of 4 runs got HTTP 429")
    assert "the run's deadline (max_seconds=3)" in result.error
    if retry_after == "100000":  # asked for more than the deadline allows: no sleeping into it
        assert "the server asked to wait 100000 s" in result.error
    assert result.history == [] and result.best_values == {}  # nothing judged, nothing kept


def test_langchain_chat_openai_errors_are_retried_too():
    pytest.importorskip("langchain_openai")
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    from opto_adapters.langchain import ChainTarget

    provider = FlakyProvider(retry_after=0.05)
    with ScriptedServer([provider], repeat_last=True) as server:
        prompt = ChatPromptTemplate.from_messages([("system", "Answer in upper case."), ("human", "{question}")])
        chain = prompt | ChatOpenAI(model="scripted", base_url=server.base_url, api_key="scripted", max_retries=0)
        target = ChainTarget(chain, input_keys=["question"])
        llm = ScriptedLLM([json.dumps({"reasoning": "fine", "suggestion": {}})])

        def feedback(example, output):
            return shout_feedback(example, output.content)

        result = optimize(
            target, QUESTIONS[:2], feedback, OptoPrime(target.parameters(), llm), max_steps=1, batch_size=2
        )
    assert result.initial_score == 1.0  # judged on answers only: 500 and 429 were retried
    assert [len(r["causes"]) for r in result.history[0]["retried"]] == [2, 2]
    assert set(provider.attempts.values()) == {4}  # 500, 429, the answer; then the step's batch once more
