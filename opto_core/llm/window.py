"""What fits in a context window: how many tokens a text really is, and how much room an answer needs.

A local server often holds only 2,048 to 8,192 tokens, prompt and answer together. Two numbers
decide whether a step fits, and both were guesses before:

- **The prompt's size.** ``characters / 3.5`` (`opto_core.kernel.tokens`) runs well under the truth for
  code and JSON on small-vocabulary models (SmolLM2 reads ``def add(a, b): return a + b`` as one token
  per 2.75 characters). Where the endpoint can count, we ask it: llama.cpp's ``POST /tokenize`` (the
  embedded server has it, as do llama.cpp's own server and most of its wrappers), or tiktoken's encoding
  for an OpenAI model when that encoding's file is already on disk (nothing is downloaded). Elsewhere
  the estimate stays, calibrated by the server's reported prompt tokens after each call.
- **The answer's reserve.** A fixed reserve (it was 600 tokens) is too much for a step that tunes one
  number and too little for one that rewrites three tools. `answer_reserve` sizes it from what the
  step may answer: some reasoning, plus a new value for every trainable parameter, as long as its
  current value (code and text) or a few tokens (numbers and choices); within
  [`MIN_ANSWER_TOKENS`, `MAX_ANSWER_TOKENS`] and never more than `MAX_ANSWER_SHARE` of the window. A
  reserve the user sets (``max_answer_tokens``) is used as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import urllib.request
from collections import OrderedDict
from typing import Any, Callable, Iterable

from opto_core.kernel.tokens import count_tokens

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_ANSWER_SHARE",
    "MAX_ANSWER_TOKENS",
    "MIN_ANSWER_TOKENS",
    "TokenizeEndpoint",
    "answer_reserve",
    "tiktoken_counter",
]

#: The answer reserve never goes below this (a reasoning sentence and a few small values) ...
MIN_ANSWER_TOKENS = 160
#: ... nor above this, nor above this share of the context window.
MAX_ANSWER_TOKENS = 4096
MAX_ANSWER_SHARE = 0.4
#: Tokens for the answer's reasoning and JSON frame.
REASONING_TOKENS = 120
#: Tokens a numeric or choice value takes in the answer (name, quotes, digits).
SMALL_VALUE_TOKENS = 16
#: A rewritten text or code value may grow this much over its current length (and JSON escapes newlines).
GROWTH = 1.3


def answer_reserve(parameters: Iterable[Any], window: int | None = None) -> tuple[int, str]:
    """``(tokens, why)``: the room to keep for an answer that may propose a value for each of ``parameters``."""
    needed, parts = REASONING_TOKENS, {"number or choice": 0, "text": 0, "code": 0, "json": 0}
    for parameter in parameters:
        if not getattr(parameter, "trainable", True):
            continue
        kind = parameter.kind
        if kind in ("float", "int", "choice"):
            needed += SMALL_VALUE_TOKENS + count_tokens(parameter.name)
            parts["number or choice"] += 1
        else:
            value = parameter.value if isinstance(parameter.value, str) else json.dumps(parameter.value, default=repr)
            needed += math.ceil(count_tokens(value) * GROWTH) + count_tokens(parameter.name) + 8
            parts[kind if kind in parts else "text"] += 1
    ceiling = MAX_ANSWER_TOKENS if window is None else min(MAX_ANSWER_TOKENS, int(window * MAX_ANSWER_SHARE))
    tokens = max(MIN_ANSWER_TOKENS, min(needed, ceiling))
    counted = ", ".join(f"{n} {kind}" for kind, n in parts.items() if n)
    why = f"reasoning and a new value for each trainable parameter ({counted}) need about {needed}"
    if tokens != needed:
        why += f", kept within [{MIN_ANSWER_TOKENS}, {ceiling}]"
    return tokens, why


class TokenizeEndpoint:
    """Exact token counts from a llama.cpp-style server's ``POST /tokenize`` (``{"content": text}`` ->
    ``{"tokens": [...]}``), remembered for the last few hundred texts (a step counts the same system
    prompt and values again and again)."""

    def __init__(
        self, root: str, headers: dict[str, str] | None = None, timeout: float = 5.0, loopback: bool = True
    ) -> None:
        self.url = root.rstrip("/") + "/tokenize"
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.timeout = timeout
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        body = json.dumps({"content": text, "add_special": False}).encode("utf-8", "surrogatepass")
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with self._opener.open(request, timeout=self.timeout) as response:
            answer = json.loads(response.read(10_000_000))
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list):
            raise ValueError(f"{self.url} answered without a token list")
        with self._lock:
            self._cache[key] = len(tokens)
            while len(self._cache) > 512:
                self._cache.popitem(last=False)
        return len(tokens)


_TIKTOKEN_FILES = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def tiktoken_counter(model: str) -> Callable[[str], int] | None:
    """tiktoken's encoding for an OpenAI ``model``, only when its file is already on disk (tiktoken would
    otherwise download it, with no timeout, and nothing here downloads at run time); else None."""
    try:
        from tiktoken.model import encoding_name_for_model

        name = encoding_name_for_model(model.rsplit("/", 1)[-1])
    except Exception:  # tiktoken missing, or a model it does not know
        return None
    cache = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    if not os.path.exists(os.path.join(cache, hashlib.sha1(_TIKTOKEN_FILES.format(name).encode()).hexdigest())):
        return None
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(name)
    except Exception:  # a damaged cache file: the estimate it is
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))
