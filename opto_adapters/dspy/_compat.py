"""Every internal of DSPy the adapter touches, and why no public seam works.

``tests/dspy/test_dspy_compat.py`` fails when a DSPy release changes one of them; `TESTED_RANGE` is
what it passed on, and the ``dspy`` extra in ``pyproject.toml`` pins the same range.
"""

from __future__ import annotations

from typing import Any

#: The DSPy versions these accessors were tested on.
TESTED_RANGE = ">=3.0,<4"


def context_overrides() -> dict[str, Any]:
    """The settings ``dspy.context(...)`` set in the calling thread (not the global ``dspy.configure``).

    Why internal: the loop runs examples in worker threads, which do not inherit DSPy's thread-local
    context, so a target carries it over. ``dspy.settings.copy()`` is public but merges in the
    global config, which would freeze it: a later ``dspy.configure(lm=...)`` would no longer apply.
    Only the context variable ``dspy.dsp.utils.settings.thread_local_overrides`` holds the overrides.
    """
    from dspy.dsp.utils.settings import thread_local_overrides

    return dict(thread_local_overrides.get())


def input_keys(example: Any) -> list[str] | None:
    """The input fields an example names with ``with_inputs(...)``, present or not (None: it names none).

    Why private: the public ``example.inputs()`` keeps only the named fields the example *has*, so
    an example that lacks one of its inputs could not be told apart (the target refuses it, naming
    the missing field); the names are only in ``Example._input_keys``.
    """
    keys = example._input_keys
    return None if keys is None else list(keys)


__all__ = ["TESTED_RANGE", "context_overrides", "input_keys"]
