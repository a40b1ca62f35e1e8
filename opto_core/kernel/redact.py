"""Credentials in URLs: scrubbed from everything we write or log.

An endpoint URL can carry a secret in two places: the userinfo (``http://user:KEY@host/v1``)
and the query string (``?api_key=KEY``, ``?token=...``, ``?sig=...``). Such a URL ends up in
``config.json``, ``report.html``, error messages, and the HTTP client's own INFO log line
(``HTTP Request: POST http://user:KEY@host/v1/chat/completions``). `scrub_url` replaces the
secret parts by ``***``; `scrub_text` does it for every URL inside a longer text; `UrlSecretFilter`
is a `logging.Filter` that scrubs log records, installed on the ``httpx`` loggers by the LLM
client (`install_log_filter`).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
#: Query parameter names that carry credentials (matched case-insensitively, anywhere in the name).
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|auth|credential|signature|^sig$|session|code$)",
                           re.IGNORECASE)
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
            query = "&".join(f"{quote(name, safe='')}={MASK if _SECRET_PARAM.search(name) else quote(value, safe='')}"
                             for name, value in pairs)
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
    """Scrubs URLs in a log record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.msg, str):
                record.msg = scrub_text(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(_scrub_arg(arg) for arg in record.args)
            elif isinstance(record.args, dict):
                record.args = {key: _scrub_arg(value) for key, value in record.args.items()}
        except Exception:  # a filter must never break logging
            pass
        return True


def _scrub_arg(arg: object) -> object:
    if isinstance(arg, str):
        return scrub_text(arg)
    text = str(arg) if type(arg).__name__ == "URL" else None  # httpx.URL, logged with %s
    if text is not None and "://" in text:
        scrubbed = scrub_text(text)
        return scrubbed if scrubbed != text else arg
    return arg


_FILTER = UrlSecretFilter()


def install_log_filter() -> None:
    """Put the URL filter on the HTTP client loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


_SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|secret|password|token$)", re.IGNORECASE)


def scrub(value: Any) -> Any:
    """Drop anything that looks like a secret from settings before they are written: values under
    key-like names, and credentials inside URLs (`opto_core.kernel.redact.scrub_text`)."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET_KEYS.search(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
