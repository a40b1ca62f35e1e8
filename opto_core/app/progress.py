"""A quiet terminal for the ``opto`` command: what it logs, and how a run is shown.

Frameworks log a lot at INFO: AutoGen's runtime ("Publishing message of type ...") about 900
lines for one demo, httpx a line per request ("HTTP Request: POST ..."), LiteLLM and DSPy theirs.
Without ``-v`` only warnings and errors are shown (ours and theirs), through the same rich console
as the live line, so a message never tears it; ``-v`` shows everything at INFO. The run itself is
shown by `opto_core.engine.progress.RunDisplay` (one live line in a terminal, plain lines in a pipe).
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

from opto_core.engine.progress import RunDisplay

__all__ = ["configure_logging", "run_display"]

#: Loggers that stay at WARNING even with ``-v`` is off (they ignore the root level or set their own).
NOISY = (
    "autogen_core",
    "autogen_core.events",
    "autogen_agentchat",
    "autogen_ext",
    "httpx",
    "httpcore",
    "openai",
    "LiteLLM",
    "litellm",
    "dspy",
    "urllib3",
    "ray",
)


def configure_logging(console: Console, verbose: bool = False) -> None:
    """Route every log record through ``console``: INFO and up with ``verbose``, else WARNING and up."""
    from opto_core.kernel.redact import install_log_filter

    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_opto_console", False):
            root.removeHandler(handler)
    handler = RichHandler(
        console=console, show_time=False, show_path=False, markup=False, rich_tracebacks=False, show_level=True
    )
    handler._opto_console = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(level)
    install_log_filter()  # URL credentials never reach a log line


def run_display(console: Console) -> RunDisplay:
    """The ``on_event`` listener the commands pass to `optimize`."""
    return RunDisplay(console)
