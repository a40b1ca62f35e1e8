"""One redactor for secrets: whatever text leaves a workflow passes through it.

Secrets reach text in many ways: an SDK's 401 message echoes the API key, a DSPy ``extra_headers``
value or ``organization`` sits in an object the trace records, an endpoint URL carries
``user:password@``, a debug log prints a request. The run writes text to many places: graphs,
``history.jsonl``, ``checkpoint.json``, reports, logs, the terminal, and the request it sends to
the optimizer's endpoint. Instead of catching secrets at each writer, every writer calls the
process's one `Redactor` (`REDACTOR`, `redact`), which replaces:

- the values of environment variables whose names say key, token, secret, password or credential
  (``OPENAI_API_KEY``, ``HF_TOKEN``, ``DB_PASSWORD``; not ``PWD``, not ``..._PATH``), read fresh each time;
- every secret registered with it: the optimizer client's key and URL credentials (the LLM client
  registers them), and those `Redactor.discover` finds in the objects a run knows (API keys,
  ``SecretStr`` values, authorization and other non-standard header values, ``organization``) of
  LangChain, DSPy and AutoGen model clients, found by attribute and key names, without running code;
- credentials inside URLs (userinfo, key/token/signature query values): `scrub_url`, `scrub_text`;

each by ``***``, also in their JSON- and HTML-escaped spellings. Logs are redacted by a log-record
factory (`install_log_filter`), so records of any logger (the ``openai`` SDK's ``OPENAI_LOG=debug``
lines, ``httpx``'s request lines) are clean before any handler sees them.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

MASK = "***"
#: Query parameter names that carry credentials (matched case-insensitively, anywhere in the name).
_SECRET_PARAM = re.compile(
    r"(key|token|secret|password|passwd|pwd|auth|credential|signature|^sig$|session|code$)", re.IGNORECASE
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]+")
#: The loggers that print request URLs: httpx (openai < 3), httpx2 (openai 3), httpcore.
LOGGERS = ("httpx", "httpx2", "httpcore")


def scrub_url(url: str | None) -> str | None:
    """``url`` without credentials: userinfo becomes ``***@``, secret-looking query values ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _fallback(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            query = "&".join(
                f"{quote(name, safe='')}={MASK if _SECRET_PARAM.search(name) else quote(value, safe='')}"
                for name, value in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _fallback(url: str) -> str:
    """For a URL the parser refuses: drop userinfo and every query value."""
    url = re.sub(r"//[^/@\s]+@", f"//{MASK}@", url)
    return re.sub(r"([?&][^=&#\s]+=)[^&#\s]*", rf"\1{MASK}", url)


def scrub_text(text: str) -> str:
    """Every URL inside ``text`` scrubbed (cheap when the text holds no ``://``)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda match: scrub_url(match.group(0)) or "", text)


class UrlSecretFilter(logging.Filter):
    """Redacts a log record's message and arguments (secrets and URL credentials); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> None:
    """Redact ``record`` in place; its arguments are folded into the message only when one held a secret."""
    try:
        if isinstance(record.msg, str):
            record.msg = REDACTOR.redact(record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            cleaned = [_redact_arg(arg) for arg in args]
            if any(new is not old for new, old in zip(cleaned, args)):
                try:
                    record.msg = REDACTOR.redact(record.getMessage())
                    record.args = ()
                except Exception:  # a message whose arguments do not fit: the redacted arguments after it
                    record.msg = f"{REDACTOR.redact(str(record.msg))} {' '.join(str(c) for c in cleaned)}"
                    record.args = ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            cleaned_text = REDACTOR.redact(text)
            if cleaned_text != text:
                record.exc_text = cleaned_text
    except Exception:  # redaction must never break logging
        pass


def _redact_arg(arg: object) -> object:
    """The argument itself when it holds no secret, else its redacted text."""
    if isinstance(arg, (int, float, bool)) or arg is None:
        return arg
    try:
        text = arg if isinstance(arg, str) else str(arg)
    except Exception:
        return arg
    cleaned = REDACTOR.redact(text)
    return arg if cleaned == text else cleaned


_FILTER = UrlSecretFilter()
_FACTORY_LOCK = threading.Lock()
_INSTALLED = False


def install_log_filter() -> None:
    """Redact every log record of this process before any handler sees it (idempotent).

    A log-record factory wraps the current one, so records of every logger are covered (the
    ``openai`` SDK's own debug lines, ``httpx``'s request lines, the user's loggers); the filter also
    stays on the HTTP client loggers for records made before this was installed.
    """
    global _INSTALLED
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    with _FACTORY_LOCK:
        if _INSTALLED:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _INSTALLED = True


# ----- the one redactor -----------------------------------------------------------------------------------
#: Parts of an environment variable's name that say its value is a secret.
_SECRET_NAME_PARTS = frozenset(
    {
        "KEY",
        "APIKEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "CREDENTIAL",
        "CREDENTIALS",
        "AUTH",
        "COOKIE",
        "ORGANIZATION",
    }
)
#: ... unless the name ends in one of these (a path, a socket, a setting about the secret).
_NOT_SECRET_ENDINGS = frozenset(
    {
        "PATH",
        "FILE",
        "DIR",
        "SOCK",
        "URL",
        "HOST",
        "PORT",
        "ID",
        "NAME",
        "TYPE",
        "MODE",
        "LEVEL",
        "TIMEOUT",
        "ENABLED",
        "LIMIT",
        "REGION",
        "VERSION",
    }
)
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})
#: Attribute and key names whose string values are secrets.
_SECRET_ATTRIBUTE = re.compile(
    r"(^|_)(api_?key|secret|secret_key|private_key|access_key|subscription_key|token|"
    r"access_token|auth_token|password|passwd|credentials?|organization|org_id|"
    r"authorization|bearer)$",
    re.IGNORECASE,
)
#: Header and attribute names whose dicts hold headers.
_HEADERS = re.compile(r"headers$", re.IGNORECASE)
#: Headers that carry no secret.
_PLAIN_HEADERS = frozenset(
    {
        "content-type",
        "accept",
        "user-agent",
        "accept-encoding",
        "connection",
        "host",
        "content-length",
        "cache-control",
        "x-stainless-lang",
        "x-stainless-package-version",
        "x-stainless-os",
        "x-stainless-arch",
        "x-stainless-runtime",
        "openai-beta",
        "anthropic-version",
        "x-stainless-runtime-version",
        "x-stainless-retry-count",
    }
)
#: Shortest value taken as a secret (shorter values are too common to mask everywhere).
MIN_SECRET = 8
#: Keys that local servers accept and that say nothing secret (masking them would mask model names).
_PLACEHOLDERS = frozenset(
    {
        "no-key",
        "empty",
        "ollama",
        "lm-studio",
        "sk-no-key-required",
        "none",
        "dummy",
        "placeholder",
        "not-needed",
        "not-used",
        "anything",
        "sk-dummy",
        "sk-local",
    }
)


def secret_env_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a key, token, secret or password."""
    upper = name.upper()
    if upper in _NOT_SECRET_NAMES:
        return False
    parts = [part for part in re.split(r"[^A-Z0-9]+", upper) if part]
    if not parts or parts[-1] in _NOT_SECRET_ENDINGS:
        return False
    return any(part in _SECRET_NAME_PARTS or part.endswith("APIKEY") for part in parts)


class Redactor:
    """Replaces secrets and URL credentials by ``***`` in any text (see the module docstring)."""

    def __init__(self, environ: Any = None) -> None:
        self._registered: dict[str, str] = {}  # secret -> where it came from
        self._environ = environ
        self._lock = threading.Lock()
        self._pattern: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)

    # ----- what is secret -------------------------------------------------------------------------
    def register(self, value: Any, where: str = "") -> bool:
        """Treat ``value`` as a secret from now on (a string of `MIN_SECRET` or more characters, not a
        placeholder such as ``"ollama"``); True if it was new."""
        if _is_secret_type(value):  # pydantic SecretStr
            try:
                value = value.get_secret_value()
            except Exception:
                return False
        if not isinstance(value, str) or len(value.strip()) < MIN_SECRET or value.lower() in _PLACEHOLDERS:
            return False
        with self._lock:
            if value in self._registered:
                return False
            self._registered[value] = where or "registered"
        return True

    def forget_registered(self) -> None:
        """Forget every registered secret (environment secrets are read anew each time anyway): for a
        process that serves unrelated runs one after the other, such as a test session."""
        with self._lock:
            self._registered.clear()

    def register_url(self, url: str | None, where: str = "endpoint URL") -> None:
        """The credentials inside a URL: the userinfo (user and password) and secret-looking query values."""
        if not url or "://" not in url:
            return
        try:
            parts = urlsplit(url)
        except ValueError:
            return
        if parts.password:
            self.register(parts.password, where)
            self.register(unquote(parts.password), where)
        if "@" in parts.netloc:
            userinfo = parts.netloc.rsplit("@", 1)[0]
            self.register(userinfo, where)
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if _SECRET_PARAM.search(name):
                self.register(value, where)

    def environment(self) -> dict[str, str]:
        """Secret-looking environment variables and their values (read now, so later changes count)."""
        environ = self._environ if self._environ is not None else os.environ
        found = {}
        for name, value in list(environ.items()):
            if len(value) >= MIN_SECRET and secret_env_name(name):
                found[value] = name
        return found

    def secrets(self) -> dict[str, str]:
        """Every secret known now: value -> where it came from."""
        with self._lock:
            known = dict(self._registered)
        for value, name in self.environment().items():
            known.setdefault(value, f"${name}")
        return known

    def discover(self, *roots: Any, max_objects: int = 20_000, max_depth: int = 8) -> int:
        """Register the keys and headers held by the objects reachable from ``roots`` (a target, its
        framework objects, the optimizer and its client). Reads ``__dict__``, dicts, lists and tuples
        only: no property, no ``__getattr__``, nothing of the objects' code runs. Returns how many
        secrets were new."""
        seen: set[int] = set()
        new = 0
        stack: list[tuple[Any, int, str]] = [(root, 0, "") for root in roots]
        while stack and len(seen) < max_objects:
            item, depth, label = stack.pop()
            if id(item) in seen or depth > max_depth or isinstance(item, (int, float, bool, bytes, type(None))):
                continue
            seen.add(id(item))
            if isinstance(item, str):
                continue
            if _is_secret_type(item):
                new += self.register(item, label or "a SecretStr")
                continue
            if isinstance(item, dict):
                entries = list(item.items())[:1000]
            elif isinstance(item, (list, tuple, set, frozenset)):
                entries = [(label, value) for value in list(item)[:1000]]
            else:
                if _is_code(item):
                    continue
                if type(item).__module__ in ("builtins", "threading", "_thread", "logging", "socket", "ssl"):
                    continue
                try:
                    entries = list(object.__getattribute__(item, "__dict__").items())[:1000]
                except Exception:
                    continue
            headers = bool(_HEADERS.search(label))
            for key, value in entries:
                name = str(key)
                if isinstance(value, str) or _is_secret_type(value):
                    if _SECRET_ATTRIBUTE.search(name) or (headers and name.lower() not in _PLAIN_HEADERS):
                        new += self.register(value, name)
                    elif isinstance(value, str) and "://" in value:
                        self.register_url(value, name)
                elif not isinstance(value, (int, float, bool, type(None))) and not _is_code(value):
                    stack.append((value, depth + 1, name))
        return new

    # ----- replacing -----------------------------------------------------------------------------
    def _compiled(self) -> re.Pattern[str] | None:
        known = frozenset(self.secrets())
        cached_for, pattern = self._pattern
        if known == cached_for:
            return pattern
        spellings: set[str] = set()
        for secret in known:
            spellings.add(secret)
            spellings.add(json.dumps(secret)[1:-1])
            spellings.add(json.dumps(secret, ensure_ascii=False)[1:-1])
            spellings.add(html.escape(secret))
        spellings.discard("")
        ordered = sorted(spellings, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
        self._pattern = (known, pattern)
        return pattern

    def redact(self, text: str) -> str:
        """``text`` with every known secret and every URL credential replaced by ``***``."""
        if not isinstance(text, str) or not text:
            return text
        pattern = self._compiled()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        return scrub_text(text)

    def redact_value(self, value: Any) -> Any:
        """``redact`` applied to every string inside JSON-like data (keys included)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact_value(k): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(v) for v in value]
        return value


def _is_secret_type(value: Any) -> bool:
    return type(value).__name__ in ("SecretStr", "SecretBytes")


def _is_code(value: Any) -> bool:
    """Modules, functions and classes: not walked (their globals are not the run's clients)."""
    import types

    return isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type))


#: The process's one redactor (files, logs, reports, the terminal and optimizer requests all use it).
REDACTOR = Redactor()


def redact(text: str) -> str:
    """`Redactor.redact` of the process's one redactor."""
    return REDACTOR.redact(text)


def register_secret(value: Any, where: str = "") -> bool:
    """Treat ``value`` as a secret in everything this process writes from now on."""
    return REDACTOR.register(value, where)


_SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|secret|password|token$)", re.IGNORECASE)


def scrub(value: Any) -> Any:
    """Drop anything that looks like a secret from settings before they are written: values under
    key-like names, known secrets and credentials inside URLs (`redact`)."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET_KEYS.search(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value
