"""The one error a rejected value raises, shared by parameters and the code policy.

It lives alone so that the code policy (which rejects code) and parameters (which use the policy)
need not import each other.
"""

from __future__ import annotations


class InvalidValue(ValueError):
    """A suggested value that a parameter rejects; ``reason`` is meant for the optimizer."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"parameter {parameter!r}: {reason}")
        self.parameter = parameter
        self.reason = reason
