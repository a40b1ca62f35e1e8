"""Optimizers: OptoPrime (trace-based, with memory) and baselines for honest comparison."""

from .base import MemoryEntry, Optimizer, Proposal
from .opro import OPRO
from .optoprime import OptoPrime, OptoPrimeNoTrace
from .parsing import ParseError, parse_answer

__all__ = ["MemoryEntry", "OPRO", "Optimizer", "OptoPrime", "OptoPrimeNoTrace", "ParseError", "Proposal",
           "parse_answer"]
