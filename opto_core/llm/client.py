"""`OpenAIChat`: the LLM client the optimizers use, for any OpenAI-compatible endpoint.

Why a wrapper at all: an optimization run makes many calls over minutes to hours, so the client
must survive rate limits and flaky networks (retries with backoff), fail clearly on real mistakes
(a 4xx names the endpoint and model, never the key), ask for JSON in whatever way the server
understands, and count every token and dollar for the loop's budgets.

Configuration, first match wins: arguments, then ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` /
``OPTO_MODEL`` (or ``OPENAI_MODEL``). With no endpoint at all (no base URL and no key), or with
``base_url="local"``, it starts the embedded SmolLM2-135M server (`opto_core.llm.local`) once per
process and logs a warning saying so: good for demos and smoke tests, far too small to judge
optimization quality. ``timeout`` (seconds per HTTP attempt) defaults to 60, or 600 for the
embedded model, which can need minutes for a long prompt on a busy machine.

JSON output (``chat(..., json_schema=...)``): ``response_format`` of type ``json_schema`` first,
then ``json_object``, then plain text with the schema in the prompt; a 400/422 that says the
format is unsupported moves this client down one level for good (``json_mode="auto"``).

Accounting: ``self.usage`` (`opto_core.llm.usage.Usage`) totals the calls that reached the server:
calls, prompt/completion tokens (from the response's ``usage``, estimated when the server sends
none) and cost in USD from the price table (``prices.json``, per million tokens; overridable by
``prices=``; a model missing from the table costs ``None`` per call and adds 0 to the total).

Cache (``cache_dir=``, off by default): one JSON file per request, keyed on the sha256 of the model,
messages and parameters (not the endpoint, so a local server on a new port still hits). A hit
returns the stored answer with ``cached=True`` and ``cost_usd=0.0`` (token counts as recorded);
it is NOT added to ``self.usage`` (nothing was spent) but counted in ``self.cache_hits``.

Context window (``self.context_window``, tokens, or ``None`` when unknown): what the optimizer
must fit its prompt plus the answer into. Learned once, first match wins: the ``context_window``
argument, ``OPTO_CONTEXT_WINDOW``, the embedded server's own ``n_ctx``, llama.cpp's ``GET /props``,
Ollama's ``POST /api/show``, then `KNOWN_WINDOWS` by model name. A probe that does not answer is
skipped silently. A 400 that says the request exceeds the context raises `ContextWindowExceeded`
(with the server's numbers when it gives them), and the window it names is remembered.

``openai`` is imported here only; ``import opto_core`` does not load this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import openai
import tenacity

from opto_core.kernel.redact import REDACTOR, redact, register_secret
from opto_core.kernel.tokens import count_tokens
from opto_core.llm.retry_after import capped, retry_after_seconds
from opto_core.llm.usage import ChatResult, Usage

logger = logging.getLogger(__name__)

__all__ = ["ContextWindowExceeded", "DEFAULT_OPENAI_MODEL", "KNOWN_WINDOWS", "LLMError", "OpenAIChat", "load_prices"]

#: The model used against api.openai.com when no model is configured.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"
#: Seconds for one whole call (retries included) to a hosted endpoint when ``deadline`` is not given.
DEFAULT_DEADLINE = 120.0
#: Seconds per HTTP attempt when ``timeout`` is not given: hosted endpoints, the embedded model.
DEFAULT_TIMEOUT = 60.0
LOCAL_TIMEOUT = 600.0
#: Sent when an endpoint needs no key (local servers); the openai package insists on one.
NO_KEY = "no-key"
#: The longest wait a server's Retry-After may impose on a call without a deadline (seconds).
MAX_RETRY_AFTER = 60.0
JSON_MODES = ("json_schema", "json_object", "text")
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$|-\d{4}$")
#: Context windows (tokens) of well-known hosted models, looked up like prices (exact name, then without
#: a provider prefix and a date suffix, then the longest known prefix). Servers we can ask come first.
KNOWN_WINDOWS: dict[str, int] = {
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
    "claude-3": 200_000,
    "claude-3-5": 200_000,
    "claude-3-7": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-opus-4": 200_000,
    "gemini-1.5": 1_048_576,
    "gemini-2.0": 1_048_576,
    "gemini-2.5": 1_048_576,
    "deepseek-chat": 65_536,
    "deepseek-reasoner": 65_536,
    "mistral-large": 131_072,
    "mistral-small": 32_768,
}
#: Ollama's context when a model sets no ``num_ctx`` (4096 since Ollama 0.6; it truncates longer prompts silently).
OLLAMA_DEFAULT_CONTEXT = 4096
#: Seconds to wait for a context-window probe (``/props``, ``/api/show``) before giving up silently.
PROBE_TIMEOUT = 3.0
_CONTEXT_ERROR = re.compile(
    r"exceeds? the (?:available )?context|maximum context length|context[_ ]length[_ ]exceeded|"
    r"context window|prompt is too long|too many tokens|input is too long",
    re.IGNORECASE,
)
_WINDOW_NUMBER = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"available context size \((\d+) tokens?\)",
        r"maximum context length is (\d+)",
        r"context (?:size|window|length) (?:of|is) (\d+)",
        r"> ?(\d+) maximum",
    )
]
_REQUEST_NUMBER = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\((\d+) in the messages",
        r"request \((\d+) tokens?\)",
        r"resulted in (\d+) tokens",
        r"requested (\d+) tokens",
        r"too long: (\d+) tokens",
    )
]
_SECRET_PATTERNS = [re.compile(r"\bsk-[A-Za-z0-9_*\-.]{4,}"), re.compile(r"(?i)(bearer\s+)\S+")]


class LLMError(RuntimeError):
    """A call failed for good: a 4xx, or a transient error that outlived the retries.

    The message names the endpoint, the model and the server's reason; never the API key."""

    def __init__(
        self, message: str, *, status_code: int | None = None, endpoint: str | None = None, model: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.endpoint = endpoint
        self.model = model


class ContextWindowExceeded(LLMError):
    """The server refused the request as longer than its context window.

    ``window`` and ``request_tokens`` are the server's own numbers when its message gives them
    (llama.cpp: "request (4173 tokens) exceeds the available context size (4096 tokens)"; OpenAI:
    "maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens").
    ``context_window_exceeded`` is how an optimizer recognises it from any chat client."""

    context_window_exceeded = True

    def __init__(
        self, message: str, *, window: int | None = None, request_tokens: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.window = window
        self.request_tokens = request_tokens


def context_numbers(message: str) -> tuple[int | None, int | None] | None:
    """``(window, request_tokens)`` from a server message that says the context was exceeded
    (either may be None when not stated); None when the message is about something else."""
    if not _CONTEXT_ERROR.search(message):
        return None

    def first(patterns: list[re.Pattern[str]]) -> int | None:
        for pattern in patterns:
            found = pattern.search(message)
            if found:
                return int(found.group(1))
        return None

    return first(_WINDOW_NUMBER), first(_REQUEST_NUMBER)


def known_window(model: str) -> int | None:
    """The context window of a well-known hosted model (`KNOWN_WINDOWS`), else None."""
    for name in (model, model.rsplit("/", 1)[-1]):
        for candidate in (name, _DATE_SUFFIX.sub("", name)):
            if candidate in KNOWN_WINDOWS:
                return KNOWN_WINDOWS[candidate]
    base = _DATE_SUFFIX.sub("", model.rsplit("/", 1)[-1])
    prefixes = [k for k in KNOWN_WINDOWS if base.startswith(k + "-")]
    return KNOWN_WINDOWS[max(prefixes, key=len)] if prefixes else None


def load_prices(overrides: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> dict[str, tuple[float, float]]:
    """The price table ``{model: (input_usd_per_million, output_usd_per_million)}``.

    ``overrides`` (a mapping, or the path of a JSON file of the same shape as ``prices.json``) is
    merged over the built-in table; values may be ``{"input": x, "output": y}`` or ``(x, y)``."""
    table = _parse_prices(json.loads(resources.files(__package__).joinpath("prices.json").read_text("utf-8")))
    if overrides is not None:
        table.update(
            _parse_prices(
                overrides if isinstance(overrides, Mapping) else json.loads(Path(overrides).read_text("utf-8"))
            )
        )
    return table


def _parse_prices(data: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    table: dict[str, tuple[float, float]] = {}
    for model, price in data.items():
        if model.startswith("_"):
            continue
        try:
            if isinstance(price, Mapping):
                pair = (float(price["input"]), float(price["output"]))
            else:
                pair = (float(price[0]), float(price[1]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise ValueError(
                f"price of {model!r} must be {{'input': usd_per_million, 'output': usd_per_million}} "
                f"or a pair, got {price!r}"
            ) from None
        if pair[0] < 0 or pair[1] < 0:
            raise ValueError(f"price of {model!r} must not be negative, got {pair}")
        table[model] = pair
    return table


def price_of(model: str, table: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """Exact name first, then without a provider prefix (``openai/``) and a date suffix."""
    for name in (model, model.rsplit("/", 1)[-1]):
        if name in table:
            return table[name]
        undated = _DATE_SUFFIX.sub("", name)
        if undated in table:
            return table[undated]
    return None


class OpenAIChat:
    """A `ChatModel` on the ``openai`` package. See the module docstring for the behaviour."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        timeout: float | None = None,
        max_retries: int = 4,
        prices: Mapping[str, Any] | str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        json_mode: str = "auto",
        retry_wait: tuple[float, float] = (1.0, 30.0),
        context_window: int | None = None,
        deadline: float | None = None,
    ) -> None:
        if json_mode not in ("auto", *JSON_MODES):
            raise ValueError(f"json_mode must be 'auto' or one of {JSON_MODES}, got {json_mode!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        requested_window: int | str | None = context_window
        window_source = "the context_window argument"
        if requested_window is None and os.environ.get("OPTO_CONTEXT_WINDOW"):
            requested_window, window_source = os.environ["OPTO_CONTEXT_WINDOW"], "OPTO_CONTEXT_WINDOW"
        if requested_window is not None:
            try:
                requested_window = int(requested_window)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{window_source} must be a whole number of tokens, got {requested_window!r}"
                ) from None
            if requested_window <= 0:
                raise ValueError(f"{window_source} must be > 0 tokens, got {requested_window}")
        env_url = os.environ.get("OPENAI_BASE_URL") or None
        env_key = os.environ.get("OPENAI_API_KEY") or None
        env_model = os.environ.get("OPTO_MODEL") or os.environ.get("OPENAI_MODEL") or None
        base_url = base_url or env_url
        api_key = api_key or env_key
        self.local = base_url == "local" or (base_url is None and api_key is None)
        self._local_server: Any = None
        if self.local:
            from opto_core.llm.local import LOCAL_MODEL, local_model_name

            served = local_model_name()
            requested = model or env_model
            ignored = (
                f" (model {requested!r} ignored: it needs an endpoint)" if requested and requested != served else ""
            )
            tiny = (
                " It is tiny: fine for a demo, useless for judging optimization quality."
                if served == LOCAL_MODEL
                else ""
            )
            logger.warning(
                "No LLM endpoint configured (set OPENAI_API_KEY, or OPENAI_BASE_URL and OPTO_MODEL); "
                "using the embedded local model %s on loopback%s.%s",
                served,
                ignored,
                tiny,
            )
            self._base_url: str | None = None
            self._api_key = NO_KEY
            self.model: str = served
        else:
            self._base_url = (base_url or OPENAI_URL).rstrip("/")
            self._api_key = api_key or NO_KEY
            register_secret(self._api_key, "the optimizer client's API key")
            REDACTOR.register_url(self._base_url, "the optimizer client's endpoint URL")
            # A custom endpoint without a model name: ask its /models on the first call.
            self.model = model or env_model or (DEFAULT_OPENAI_MODEL if base_url is None else "")
        # The embedded model on a busy 2-core machine can need minutes for a long prompt, and a
        # timed-out request is retried from scratch: give it far longer than a hosted API.
        self.timeout = float(timeout) if timeout is not None else (LOCAL_TIMEOUT if self.local else DEFAULT_TIMEOUT)
        # `timeout` bounds one attempt, whole answer included (a server trickling a byte a second
        # cannot stretch it); `deadline` bounds a whole call, retries included.
        if deadline is not None and deadline <= 0:
            raise ValueError("deadline must be > 0 seconds")
        self.deadline = float(deadline) if deadline is not None else (None if self.local else DEFAULT_DEADLINE)
        self.max_retries = int(max_retries)
        self.retry_wait = (float(retry_wait[0]), float(retry_wait[1]))
        self.prices = load_prices(prices)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.usage = Usage()
        self.cache_hits = 0
        #: JSON mode in use (moves down on "unsupported" errors when json_mode="auto").
        self.format_mode = "json_schema" if json_mode == "auto" else json_mode
        self._max_tokens_param = "max_tokens"  # o-series models want max_completion_tokens
        self._send_temperature = True  # ... and refuse a temperature
        self._client: Any = None
        self._lock = threading.Lock()
        #: for the embedded server, the n_ctx it is started with; elsewhere the window the user stated
        self._requested_window: int | None = requested_window
        self._context_window: int | None = requested_window if not self.local else None
        #: where ``context_window`` came from ("" until it is looked up)
        self.context_window_source = window_source if requested_window is not None and not self.local else ""
        self._window_known = requested_window is not None and not self.local
        self._counter: Any = None  # exact token counting (llm/window.py), found on first use; False: none

    # ----- configuration ---------------------------------------------------------------------
    @property
    def base_url(self) -> str | None:
        """The endpoint (for the embedded model: its URL once started, else None). No credentials."""
        if self.local:
            return self._local_server.base_url if self._local_server is not None else None
        return _redact_url(self._base_url)

    def __repr__(self) -> str:
        where = "embedded local model" if self.local and self.base_url is None else self.base_url
        return f"OpenAIChat(model={self.model!r}, endpoint={where!r})"

    @property
    def context_window(self) -> int | None:
        """Tokens the endpoint can hold (prompt plus answer), or None when it cannot be learned.

        Looked up once (see the module docstring); for the embedded model this starts its server."""
        if not self._window_known:
            window, source = self._discover_window()
            with self._lock:
                if not self._window_known:
                    self._context_window, self.context_window_source, self._window_known = window, source, True
        return self._context_window

    @context_window.setter
    def context_window(self, tokens: int | None) -> None:
        with self._lock:
            self._context_window, self._window_known = tokens, True
            self.context_window_source = "set by the caller" if tokens is not None else ""

    def _discover_window(self) -> tuple[int | None, str]:
        if self.local:
            self._openai()
            return self._local_server.n_ctx, "the embedded server's n_ctx"
        if self._base_url != OPENAI_URL:  # a server we can ask (llama.cpp, Ollama); hosted APIs are in the table
            root = re.sub(r"/v1/?$", "", self._base_url or "")
            props = self._probe(f"{root}/props")
            settings = props.get("default_generation_settings") if isinstance(props, dict) else None
            n_ctx = (settings or {}).get("n_ctx") if isinstance(settings, dict) else None
            n_ctx = n_ctx or (props.get("n_ctx") if isinstance(props, dict) else None)
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx, "llama.cpp /props"
            try:
                model = self._resolve_model()
            except LLMError:
                model = self.model
            if model:
                window = _ollama_window(self._probe(f"{root}/api/show", {"model": model}))
                if window:
                    return window, "Ollama /api/show"
        window = known_window(self.model) if self.model else None
        return (window, "the table of known models") if window else (None, "")

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` as this endpoint's model counts them, or None where nobody can say.

        llama.cpp's ``POST /tokenize`` (the embedded server, llama.cpp and its wrappers), else tiktoken's
        encoding of an OpenAI model when its file is on disk (`opto_core.llm.window`). A counter that
        fails once is dropped: callers fall back to the estimate."""
        if self._counter is None:
            self._counter = self._find_counter() or False
        if not self._counter:
            return None
        try:
            return int(self._counter(text))
        except Exception as exc:  # the server stopped answering /tokenize: the estimate from now on
            logger.info("exact token counting stopped (%s); using the estimate", type(exc).__name__)
            self._counter = False
            return None

    def _find_counter(self) -> Any:
        from opto_core.llm.window import TokenizeEndpoint, tiktoken_counter

        if self.local or self._base_url != OPENAI_URL:
            if self.local:
                self._openai()  # starts the embedded server
                root = re.sub(r"/v1/?$", "", self._local_server.base_url)
            else:
                root = re.sub(r"/v1/?$", "", self._base_url or "")
                props = self._probe(f"{root}/props")  # only a llama.cpp-style server is asked to tokenize
                if not (isinstance(props, dict) and ("default_generation_settings" in props or "n_ctx" in props)):
                    return tiktoken_counter(self.model) if self.model else None
            headers = {"authorization": f"Bearer {self._api_key}"} if self._api_key and self._api_key != NO_KEY else {}
            endpoint = TokenizeEndpoint(root, headers, timeout=PROBE_TIMEOUT, loopback=_is_loopback(root))
            try:
                endpoint("hello")
                return endpoint
            except Exception as exc:  # not a llama.cpp-style server
                logger.debug("no /tokenize at %s (%s)", _redact_url(root), type(exc).__name__)
        return tiktoken_counter(self.model) if self.model else None

    def _probe(self, url: str, body: dict[str, Any] | None = None) -> Any:
        """JSON from a server-info endpoint, or None: any failure is silent (it is only a hint)."""
        import urllib.request

        headers = {"accept": "application/json"}
        if self._api_key and self._api_key != NO_KEY:
            headers["authorization"] = f"Bearer {self._api_key}"
        data = None
        if body is not None:
            data, headers["content-type"] = json.dumps(body).encode(), "application/json"
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(url) else []
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body else "GET")
            with urllib.request.build_opener(*handlers).open(request, timeout=PROBE_TIMEOUT) as response:
                return json.loads(response.read(1_000_000))
        except Exception as exc:  # not that kind of server, or not answering: fall back silently
            logger.debug("no context window from %s (%s)", _redact_url(url), type(exc).__name__)
            return None

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                if self.local:
                    from opto_core.llm.local import default_server

                    self._local_server = default_server(n_ctx=self._requested_window)
                    logger.info(
                        "embedded model %s is serving at %s", self._local_server.model, self._local_server.base_url
                    )
                    url = self._local_server.base_url
                else:
                    url = self._base_url
                # Retries are ours (tenacity): the SDK's own would multiply with them.
                from opto_core.kernel.redact import install_log_filter

                install_log_filter()  # httpx logs every request URL at INFO: never with its credentials
                extra: dict[str, Any] = {}
                if _is_loopback(url):  # never send loopback traffic to an HTTP(S)_PROXY from the environment
                    http_client = getattr(openai, "DefaultHttpx2Client", None) or openai.DefaultHttpxClient
                    extra["http_client"] = http_client(trust_env=False, timeout=self.timeout)
                self._client = openai.OpenAI(
                    base_url=url, api_key=self._api_key, timeout=self.timeout, max_retries=0, **extra
                )
            return self._client

    def _endpoint(self) -> str:
        return self.base_url or "the embedded local model"

    def _resolve_model(self) -> str:
        if not self.model:
            try:
                models = [m.id for m in self._with_retries(lambda: self._openai().models.list().data)]
            except openai.APIError as exc:
                raise self._error(exc, "listing models") from None
            if not models:
                raise LLMError(
                    f"no model configured and {self._endpoint()} lists none; set OPTO_MODEL or pass model=",
                    endpoint=self._endpoint(),
                )
            self.model = models[0]
            logger.info("no model configured; using %s, the first one %s lists", self.model, self._endpoint())
        return self.model

    # ----- the call --------------------------------------------------------------------------
    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        """Send ``messages``; with ``json_schema``, ask for a JSON object matching it.

        Raises `LLMError` when the server refuses the request or stays unreachable after retries,
        ``ValueError`` on malformed messages."""
        messages = _check_messages(messages)
        if json_schema is not None and not isinstance(json_schema, Mapping):
            raise ValueError(f"json_schema must be a dict (a JSON schema), got {type(json_schema).__name__}")
        temperature = self.temperature if temperature is None else temperature
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        model = self._resolve_model()
        key = None
        if self.cache_dir is not None:
            key = _cache_key(model, messages, json_schema, temperature, max_tokens)
            hit = self._cache_get(key)
            if hit is not None:
                with self._lock:
                    self.cache_hits += 1
                return hit
        text, prompt_tokens, completion_tokens, reported_model = self._complete(
            messages, json_schema, temperature, max_tokens
        )
        price = price_of(model, self.prices) or price_of(reported_model, self.prices)
        cost = None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
        result = ChatResult(text, prompt_tokens, completion_tokens, cost, reported_model or model, False)
        self.usage.add(result)
        if key is not None:
            self._cache_put(key, result, model, messages, json_schema, temperature, max_tokens)
        return result

    def _complete(
        self,
        messages: list[dict[str, str]],
        json_schema: Mapping[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> tuple[str, int, int, str]:
        for _ in range(8):  # each pass changes one remembered setting, so this ends quickly
            mode = self.format_mode if json_schema is not None else "text"
            request = self._request(messages, json_schema, mode, temperature, max_tokens)
            try:
                response = self._with_retries(lambda request=request: self._openai().chat.completions.create(**request))
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if self._adapt(exc, request, mode):
                    continue
                raise self._context_error(exc) or self._error(exc) from None
            except openai.APIStatusError as exc:  # some servers answer 413 for a request too long
                raise self._context_error(exc) or self._error(exc) from None
            except openai.APIError as exc:
                raise self._error(exc) from None
            return self._read(response, request["messages"])
        raise LLMError(
            f"{self._endpoint()} kept refusing the request for model {self.model!r}",
            endpoint=self._endpoint(),
            model=self.model,
        )

    def _request(
        self,
        messages: list[dict[str, str]],
        json_schema: Mapping[str, Any] | None,
        mode: str,
        temperature: float | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "messages": messages}
        if json_schema is not None:
            name, schema = _split_schema(json_schema)
            if mode == "json_schema":
                request["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": False},
                }
            else:  # tell the model the shape, since the server will not
                request["messages"] = _with_schema_instruction(messages, schema)
                if mode == "json_object":
                    request["response_format"] = {"type": "json_object"}
        if temperature is not None and self._send_temperature:
            request["temperature"] = temperature
        if max_tokens is not None:
            request[self._max_tokens_param] = max_tokens
        return request

    def _adapt(self, exc: openai.APIStatusError, request: dict[str, Any], mode: str) -> bool:
        """Learn from a 400/422 that names an unsupported feature; True when worth another try."""
        message = _server_message(exc).lower()
        with self._lock:
            if "response_format" in request and self.json_mode == "auto" and _mentions_format(message):
                following = JSON_MODES[JSON_MODES.index(mode) + 1]
                if self.format_mode == mode:
                    self.format_mode = following
                logger.info(
                    "%s refused response_format %s (%s); using %s from now on",
                    self._endpoint(),
                    mode,
                    _server_message(exc)[:200],
                    following,
                )
                return True
            if "max_tokens" in request and "max_completion_tokens" in message:
                self._max_tokens_param = "max_completion_tokens"
                return True
            if (
                "temperature" in request
                and "temperature" in message
                and ("unsupported" in message or "not support" in message)
            ):
                self._send_temperature = False
                return True
        return False

    def _read(self, response: Any, sent: list[dict[str, str]]) -> tuple[str, int, int, str]:
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise LLMError(
                f"{self._endpoint()} returned no choices for model {self.model!r}",
                endpoint=self._endpoint(),
                model=self.model,
            )
        message = choices[0].message
        text = message.content or ""
        if getattr(choices[0], "finish_reason", None) == "length":
            logger.warning("the answer of %s hit max_tokens and is cut off (%d characters)", self.model, len(text))
        if not text and getattr(message, "refusal", None):
            raise LLMError(
                f"model {self.model!r} at {self._endpoint()} refused: {message.refusal}",
                endpoint=self._endpoint(),
                model=self.model,
            )
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage is not None else None
        completion_tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        if prompt_tokens is None:  # the server sent no usage: estimate (chat framing ~4 tokens per message)
            prompt_tokens = sum(count_tokens(m["content"]) + 4 for m in sent)
        if completion_tokens is None:
            completion_tokens = count_tokens(text)
        return text, int(prompt_tokens), int(completion_tokens), str(getattr(response, "model", "") or "")

    # ----- retries and errors -----------------------------------------------------------------
    def _with_retries(self, call: Any) -> Any:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.max_retries + 1)
        started = time.monotonic()
        if self.deadline is not None:
            stop = stop | tenacity.stop_after_delay(self.deadline)
        decided: dict[int, float | None] = {}
        gave_up: list[str] = []

        def decide(state: tenacity.RetryCallState) -> float | None:
            """The wait before the next attempt, or None to give up now (decided once per attempt:
            tenacity asks for the wait and the stop in an order that differs between versions)."""
            if state.attempt_number in decided:
                return decided[state.attempt_number]
            remaining = None if self.deadline is None else self.deadline - (time.monotonic() - started)
            decided[state.attempt_number] = chosen = self._wait(state, remaining)
            if chosen is None:
                failure = state.outcome.exception() if state.outcome else None
                asked = retry_after_seconds(failure) if failure is not None else None
                gave_up.append(
                    f"the server asked to wait {asked:g} s (Retry-After), more than the "
                    f"{max(remaining or 0.0, 0.0):.1f} s left of the {self.deadline:g} s deadline"
                    if asked is not None
                    else f"the next retry would end past the {self.deadline:g} s deadline"
                )
            return chosen

        def wait(state: tenacity.RetryCallState) -> float:
            return decide(state) or 0.0

        class BeyondDeadline(tenacity.stop.stop_base):
            def __call__(self, state: tenacity.RetryCallState) -> bool:
                return decide(state) is None

        retrying = tenacity.Retrying(
            stop=stop | BeyondDeadline(),
            wait=wait,
            retry=tenacity.retry_if_exception(_transient),
            before_sleep=self._log_retry,
            reraise=True,
        )

        def attempt() -> Any:
            limit = self.timeout
            if self.deadline is not None:
                limit = min(limit, max(self.deadline - (time.monotonic() - started), 0.001))
            return self._bounded(call, limit)

        try:
            return retrying(attempt)
        except openai.APIError as exc:
            if _transient(exc):
                raise self._error(
                    exc, f"gave up: {gave_up[-1]}" if gave_up else f"gave up after {self.max_retries + 1} attempts"
                ) from None
            raise

    def _bounded(self, call: Any, limit: float) -> Any:
        """Run one attempt in a worker thread and wait at most ``limit`` seconds for all of it.

        httpx's timeouts apply per read, so a server that trickles a byte a second never trips
        them. When the limit passes, the client (and its connection) is closed, which ends the
        worker at its next read, and the attempt fails as a timeout (retried like any other).
        """
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["value"] = call()
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, daemon=True, name="opto-llm-attempt").start()
        if not done.wait(limit):
            with self._lock:
                client, self._client = self._client, None
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a connection another thread reads from may complain
                    pass
            message = f"no complete answer from {self._endpoint()} within {limit:g} s"
            raise AttemptTimeout(message) from TimeoutError(message)
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _wait(self, state: tenacity.RetryCallState, remaining: float | None = None) -> float | None:
        """Exponential backoff with full jitter, or the server's Retry-After when it says more; None
        when that wait does not fit in the ``remaining`` seconds of the deadline (give up now)."""
        initial, cap = self.retry_wait
        delay = min(cap, initial * 2 ** (state.attempt_number - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = retry_after_seconds(exc) if exc is not None else None
        if asked is not None and asked > MAX_RETRY_AFTER and remaining is None:
            asked = MAX_RETRY_AFTER  # no deadline (the embedded model): still never wait longer than this
        return capped(asked, delay, remaining)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "LLM call to %s (model %s) failed with %s; retry %d of %d in %.1f s",
            self._endpoint(),
            self.model,
            self._scrub(_describe(exc)),
            state.attempt_number,
            self.max_retries,
            state.next_action.sleep if state.next_action else 0.0,
        )

    def _context_error(self, exc: openai.APIStatusError) -> ContextWindowExceeded | None:
        """A `ContextWindowExceeded` when the server says the request is too long; the window it
        names becomes this client's ``context_window``."""
        numbers = context_numbers(_server_message(exc))
        if numbers is None:
            return None
        window, request_tokens = numbers
        if window:
            with self._lock:
                self._context_window, self._window_known = window, True
                self.context_window_source = "the server's context error"
        plain = self._error(exc)
        return ContextWindowExceeded(
            str(plain),
            window=window,
            request_tokens=request_tokens,
            status_code=plain.status_code,
            endpoint=plain.endpoint,
            model=plain.model,
        )

    def _error(self, exc: BaseException, context: str = "") -> LLMError:
        status = getattr(exc, "status_code", None)
        reason = self._scrub(_describe(exc))
        hint = {
            401: " (check OPENAI_API_KEY / api_key)",
            403: " (the key may lack access to this model)",
            404: " (check the model name, and that base_url ends with /v1)",
            429: " (rate limit or quota)",
        }.get(status or 0, "")
        prefix = f"{context}: " if context else ""
        return LLMError(
            f"LLM request failed: {prefix}{reason}{hint}; endpoint {self._endpoint()}, model {self.model!r}",
            status_code=status,
            endpoint=self._endpoint(),
            model=self.model,
        )

    def _scrub(self, text: str) -> str:
        if self._api_key and self._api_key != NO_KEY and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        text = redact(text)  # URL credentials echoed in a 401/500 body, and every other known secret
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "sk-") + "***", text)
        return text

    # ----- cache -----------------------------------------------------------------------------
    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> ChatResult | None:
        path = self._cache_path(key)
        try:
            data = json.loads(path.read_text("utf-8"))
            return ChatResult(
                data["text"],
                int(data["prompt_tokens"]),
                int(data["completion_tokens"]),
                0.0,
                data.get("model", self.model),
                True,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def _cache_put(
        self,
        key: str,
        result: ChatResult,
        model: str,
        messages: list[dict[str, str]],
        json_schema: Mapping[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> None:
        path = self._cache_path(key)
        entry = {
            "key": key,
            "request": {
                "model": model,
                "messages": messages,
                "json_schema": json_schema,
                "temperature": temperature,
                "max_tokens": max_tokens,
            },
            "text": result.text,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "model": result.model,
            "created": time.time(),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False
            ) as handle:
                json.dump(entry, handle, ensure_ascii=False)
            os.replace(handle.name, path)
        except OSError as exc:  # a cache must never break the run
            logger.warning("could not write cache entry %s (%s)", path, exc)


# ----- helpers ------------------------------------------------------------------------------------
def _check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {message!r:.200}")
        if not isinstance(message["content"], str):
            raise ValueError(f"message {i}: content must be a string, got {type(message['content']).__name__}")
        checked.append({"role": str(message["role"]), "content": message["content"]})
    return checked


def _split_schema(json_schema: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Accept a bare JSON schema or OpenAI's ``{"name": ..., "schema": ...}`` wrapper."""
    if "schema" in json_schema and isinstance(json_schema["schema"], Mapping) and "name" in json_schema:
        name, schema = str(json_schema["name"]), dict(json_schema["schema"])
    else:
        name, schema = str(json_schema.get("title") or "response"), dict(json_schema)
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "response", schema


def _with_schema_instruction(messages: list[dict[str, str]], schema: Mapping[str, Any]) -> list[dict[str, str]]:
    note = "Answer with one JSON object only (no prose, no code fences) that matches this JSON schema:\n" + json.dumps(
        schema, ensure_ascii=False
    )
    messages = [dict(m) for m in messages]
    if messages[0]["role"] == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{note}"
    else:
        messages.insert(0, {"role": "system", "content": note})
    return messages


def _mentions_format(message: str) -> bool:
    return any(
        word in message
        for word in ("response_format", "json_schema", "json_object", "response format", "structured output")
    )


def _server_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return response.text[:500]
        except Exception:  # a streamed or closed body
            pass
    return str(exc)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "an unknown error"
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status}: {_server_message(exc)[:500]}"
    cause = exc.__cause__
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    return f"{type(exc).__name__}{detail}"


def _transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits (not an exhausted quota), timeouts, network failures, 5xx."""
    if isinstance(exc, openai.APITimeoutError):
        return True
    if isinstance(exc, openai.APIConnectionError):
        # Only genuine transport failures: the SDK wraps ANY exception raised while sending as a
        # connection error (e.g. vcrpy's "request not in cassette"), which retrying cannot fix.
        return isinstance(exc.__cause__, _transport_errors())
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return "insufficient_quota" not in _server_message(exc).lower() and "insufficient_quota" not in json.dumps(
                exc.body, default=str
            )
        return exc.status_code >= 500 or exc.status_code in (408, 409)
    return False


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network error classes of the HTTP library under ``openai``: ``httpx2`` for openai 3.x,
    ``httpx`` before it (vcrpy patches whichever is installed)."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _cache_key(
    model: str,
    messages: list[dict[str, str]],
    json_schema: Mapping[str, Any] | None,
    temperature: float | None,
    max_tokens: int | None,
) -> str:
    request = {
        "model": model,
        "messages": messages,
        "json_schema": json_schema,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _ollama_window(show: Any) -> int | None:
    """The context Ollama really uses for a model: its ``num_ctx`` parameter when set, else Ollama's
    default, and never more than the model's trained ``<arch>.context_length``."""
    if not isinstance(show, dict):
        return None
    trained = None
    info = show.get("model_info")
    if isinstance(info, dict):
        lengths = [v for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int) and v > 0]
        trained = min(lengths) if lengths else None
    found = re.search(r"^\s*num_ctx\s+(\d+)", str(show.get("parameters") or ""), re.MULTILINE)
    if found is None and trained is None:
        return None
    used = int(found.group(1)) if found else OLLAMA_DEFAULT_CONTEXT
    return min(used, trained) if trained else used


def _is_loopback(url: str | None) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url or "").hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _redact_url(url: str | None) -> str | None:
    """Drop credentials (user:password@, key-like query values) from a URL before it is shown or stored."""
    from opto_core.kernel.redact import scrub_url

    return scrub_url(url)


class AttemptTimeout(openai.APITimeoutError):
    """One attempt outlived its whole-answer limit (see `OpenAIChat._bounded`); transient like any timeout."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.request = None  # type: ignore[assignment]  # no HTTP request: the limit is ours
        self.body = None
        self.code = self.param = self.type = None

    def __str__(self) -> str:
        return self.message
