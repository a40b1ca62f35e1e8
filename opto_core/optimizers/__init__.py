"""Optimizers: OptoPrime (trace-based, with memory), Hybrid (LLM + search), Search, and baselines."""

from .base import MemoryEntry, Optimizer, Proposal
from .hybrid import Hybrid
from .opro import OPRO
from .optoprime import OptoPrime, OptoPrimeNoTrace
from .parsing import ParseError, parse_answer
from .search import SAMPLERS, Sampler, SamplerUnavailable, Search

__all__ = ["Hybrid", "MemoryEntry", "OPRO", "Optimizer", "OptoPrime", "OptoPrimeNoTrace", "ParseError", "Proposal",
           "SAMPLERS", "Sampler", "SamplerUnavailable", "Search", "parse_answer"]
