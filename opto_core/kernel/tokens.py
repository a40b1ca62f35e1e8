"""Counting tokens: tiktoken's cl100k_base when its file is already on disk, else an estimate.

The renderer's budget, the optimizers' window arithmetic and the LLM client's usage fallback all
count with this one function, so their numbers agree.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

#: Without tiktoken, tokens are estimated as characters / this (English text and code run 3.5-4.5).
CHARS_PER_TOKEN = 3.5


_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@lru_cache(maxsize=1)
def _encoder() -> Callable[[str], int] | None:
    """tiktoken's cl100k_base, but only when its file is already cached: tiktoken would otherwise
    download it (with no timeout), and nothing here may download at run time."""
    try:
        import hashlib
        import os
        import tempfile

        cache = (
            os.environ.get("TIKTOKEN_CACHE_DIR")
            or os.environ.get("DATA_GYM_CACHE_DIR")
            or os.path.join(tempfile.gettempdir(), "data-gym-cache")
        )
        if not os.path.exists(os.path.join(cache, hashlib.sha1(_CL100K_URL.encode()).hexdigest())):
            return None
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base")
        return lambda text: len(encoding.encode(text, disallowed_special=()))
    except Exception:
        return None


def count_tokens(text: str) -> int:
    """Tokens of ``text``: tiktoken's cl100k_base when it is available offline, else an estimate
    (``ceil(characters / 3.5)``), documented in docs/render.md."""
    encoder = _encoder()
    return encoder(text) if encoder is not None else math.ceil(len(text) / CHARS_PER_TOKEN)
