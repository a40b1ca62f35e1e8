"""Optimizers: from problem instances to proposed values.

- `protocol`: what the loop asks of any optimizer (`Optimizer`: ``set_parameters``, ``step``,
  ``observe``, ``state_dict``/``load_state_dict``), the `Proposal` a step returns;
- `llm_optimizer`: the LLM machinery (`LLMOptimizer`: the request, the context window, the
  validation retry, memory), under OptoPrime (one LLM call reads the whole trace) and OPRO;
- `search`: `Search` (Optuna and friends, no LLM); `hybrid`: `Hybrid`, which composes an OptoPrime
  for text and code with a Search for numbers; `parsing`: reading the LLM's answer.

May import: the kernel and the LLM layer. Users import the optimizers from `opto_core`;
``from opto_core.optimizers import OptoPrime`` still works for one release, with a deprecation warning.
"""

from __future__ import annotations

from typing import Any

from opto_core._moved import deprecated_attribute

_OLD_NAMES = {
    "MemoryEntry": "opto_core.optimizers.llm_optimizer",
    "Optimizer": "opto_core.optimizers.protocol",
    "Proposal": "opto_core.optimizers.protocol",
    "Hybrid": "opto_core.optimizers.hybrid",
    "OPRO": "opto_core.optimizers.opro",
    "OptoPrime": "opto_core.optimizers.optoprime",
    "OptoPrimeNoTrace": "opto_core.optimizers.optoprime",
    "ParseError": "opto_core.optimizers.parsing",
    "parse_answer": "opto_core.optimizers.parsing",
    "SAMPLERS": "opto_core.optimizers.search",
    "Sampler": "opto_core.optimizers.search",
    "SamplerUnavailable": "opto_core.optimizers.search",
    "Search": "opto_core.optimizers.search",
}


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _OLD_NAMES)
