"""Optimizers: from problem instances to proposed values.

A small protocol (`base.Optimizer`: ``parameters``, ``step``, ``observe``, state save/restore),
OptoPrime (one LLM call reads the whole trace), Hybrid (OptoPrime for text and code, a search for
numbers), Search (Optuna and friends, no LLM) and the baselines (OPRO, OptoPrime without trace).

May import: the kernel and the LLM layer. Users import the optimizers from `opto_core`;
``from opto_core.optimizers import OptoPrime`` still works for one release, with a deprecation warning.
"""

from __future__ import annotations

from typing import Any

from opto_core._moved import deprecated_attribute

_OLD_NAMES = {"MemoryEntry": "opto_core.optimizers.base", "Optimizer": "opto_core.optimizers.base",
              "Proposal": "opto_core.optimizers.base", "Hybrid": "opto_core.optimizers.hybrid",
              "OPRO": "opto_core.optimizers.opro", "OptoPrime": "opto_core.optimizers.optoprime",
              "OptoPrimeNoTrace": "opto_core.optimizers.optoprime", "ParseError": "opto_core.optimizers.parsing",
              "parse_answer": "opto_core.optimizers.parsing", "SAMPLERS": "opto_core.optimizers.search",
              "Sampler": "opto_core.optimizers.search", "SamplerUnavailable": "opto_core.optimizers.search",
              "Search": "opto_core.optimizers.search"}


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _OLD_NAMES)
