"""DSPy adapter: `OptoTeleprompter`, a drop-in DSPy optimizer that updates instructions, field
descriptions, demos, LM settings and tool code together from execution traces (OptoPrime).

    from opto_adapters.dspy import OptoTeleprompter, apply_values
    optimized = OptoTeleprompter(metric=metric).compile(program, trainset=trainset)
    optimized.opto_result.save_values("values.json")      # later, in production:
    apply_values(build_program(), "values.json")
"""

from __future__ import annotations

try:
    import dspy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the DSPy adapter needs DSPy: pip install 'opto-adapters[dspy]'") from exc

from opto_adapters.dspy.deploy import apply_values, load_optimized, save_optimized, sidecar_path
from opto_adapters.dspy.metric import MetricError, adapt_metric
from opto_adapters.dspy.parameters import ProgramParameters, bound_parameters, parameters_of
from opto_adapters.dspy.target import ExampleError, ProgramTarget
from opto_adapters.dspy.teleprompter import OptimizationStopped, OptoTeleprompter
from opto_adapters.dspy.tracing import DSPyTracer

__all__ = [
    "DSPyTracer",
    "ExampleError",
    "MetricError",
    "OptimizationStopped",
    "OptoTeleprompter",
    "ProgramParameters",
    "ProgramTarget",
    "adapt_metric",
    "apply_values",
    "bound_parameters",
    "load_optimized",
    "parameters_of",
    "save_optimized",
    "sidecar_path",
]
