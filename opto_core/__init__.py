"""opto_core: Trace-style optimization (OPTO) of workflows, with no agent framework inside.

The core is built in layers, each a folder, each importing only the layers below it (checked by
import contracts in CI):

- `kernel`: what a run *is*. The graph, parameters and code values, binding (writing values back
  with undo), provenance, tracing plain Python, the conversation builder, backward, render, values
  files. Read it like a short textbook: graph -> parameters -> code -> binding -> provenance ->
  trace -> backward -> render.
- `llm`: the client for any OpenAI-compatible endpoint, usage and cost, the embedded local model.
- `optimizers`: OptoPrime, Hybrid, Search and the baselines.
- `engine`: the loop, settings, the target protocol, executors, the run directory, approval.
- `gateway`: programs without an adapter, through their model traffic or their traces (the recording
  proxy `Gateway`, `GatewayTarget`; OpenTelemetry in and out, also at ``opto_core.otel``).
- `app`: the ``opto`` command, demos, reports and drawings; `testing`: test doubles that fake only
  the model.

Users import every public name from here (and test doubles from `opto_core.testing`). Names are
imported lazily, so ``import opto_core`` stays fast and pulls in no LLM client; type checkers see
them through the ``TYPE_CHECKING`` block.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from opto_core import _moved

_moved.install()

__version__ = "0.1.0"

if TYPE_CHECKING:
    from opto_core.app.report import write_report
    from opto_core.app.tracking import MlflowTracker
    from opto_core.engine.coverage import Coverage, CoverageError, coverage
    from opto_core.engine.events import (
        EvaluationDone,
        OptimizerCallFinished,
        OptimizerCallStarted,
        ProviderRetrying,
        RunEvent,
        RunFinished,
        RunStarted,
        StepDecided,
        StepStarted,
    )
    from opto_core.engine.executors import (
        AsyncioExecutor,
        Executor,
        FeedbackError,
        InfrastructureError,
        ThreadExecutor,
        WorkflowExit,
    )
    from opto_core.engine.executors.process import ProcessExecutor, WorkerLost
    from opto_core.engine.executors.ray_cluster import RayExecutor
    from opto_core.engine.executors.transfer import register_output_type
    from opto_core.engine.fingerprint import WorkflowChanged
    from opto_core.engine.guard import WroteAroundOptimizer
    from opto_core.engine.loop import OptimizationResult, OptimizerFailed, evaluate, optimize
    from opto_core.engine.progress import RunDisplay
    from opto_core.engine.provider_errors import ProviderFailure, provider_failure
    from opto_core.engine.rundir import CorruptRun, NotARun, RunDir, RunDirError, RunDirUnwritable, RunLocked
    from opto_core.engine.sandbox import Sandbox, SandboxUnavailable
    from opto_core.engine.settings import SettingError, Settings
    from opto_core.engine.target import BoundTarget, FunctionTarget, Target
    from opto_core.gateway.offline import optimize_offline
    from opto_core.gateway.otel import load_spans, to_spans
    from opto_core.gateway.parameters import TrafficParameters
    from opto_core.gateway.proxy import Gateway
    from opto_core.gateway.target import GatewayTarget
    from opto_core.kernel.backward import BackwardError, ProblemInstance, backward
    from opto_core.kernel.binding import Binding, BoundParameters, WriteError
    from opto_core.kernel.code_policy import CodePolicy
    from opto_core.kernel.feedback import Feedback
    from opto_core.kernel.graph import Edge, Graph, GraphError, Node
    from opto_core.kernel.parameters import InvalidValue, Parameter
    from opto_core.kernel.redact import Redactor, redact, register_secret
    from opto_core.kernel.render import render
    from opto_core.kernel.templates import Template, TemplateError, TemplateMatch, check_placeholders
    from opto_core.kernel.trace import capture, op
    from opto_core.kernel.values import load_values, save_values
    from opto_core.llm.client import ContextWindowExceeded, LLMError, OpenAIChat
    from opto_core.llm.usage import ChatResult, Usage
    from opto_core.optimizers.hybrid import Hybrid
    from opto_core.optimizers.llm_optimizer import LLMOptimizer
    from opto_core.optimizers.opro import OPRO
    from opto_core.optimizers.optoprime import OptoPrime, OptoPrimeNoTrace
    from opto_core.optimizers.protocol import Optimizer, Proposal
    from opto_core.optimizers.search import Search

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # kernel
    "Feedback": "opto_core.kernel.feedback",
    "Edge": "opto_core.kernel.graph",
    "Graph": "opto_core.kernel.graph",
    "GraphError": "opto_core.kernel.graph",
    "Node": "opto_core.kernel.graph",
    "InvalidValue": "opto_core.kernel.parameters",
    "Parameter": "opto_core.kernel.parameters",
    "CodePolicy": "opto_core.kernel.code_policy",
    "Redactor": "opto_core.kernel.redact",
    "redact": "opto_core.kernel.redact",
    "register_secret": "opto_core.kernel.redact",
    "Binding": "opto_core.kernel.binding",
    "BoundParameters": "opto_core.kernel.binding",
    "WriteError": "opto_core.kernel.binding",
    "capture": "opto_core.kernel.trace",
    "op": "opto_core.kernel.trace",
    "BackwardError": "opto_core.kernel.backward",
    "ProblemInstance": "opto_core.kernel.backward",
    "backward": "opto_core.kernel.backward",
    "render": "opto_core.kernel.render",
    "Template": "opto_core.kernel.templates",
    "TemplateMatch": "opto_core.kernel.templates",
    "TemplateError": "opto_core.kernel.templates",
    "check_placeholders": "opto_core.kernel.templates",
    "load_values": "opto_core.kernel.values",
    "save_values": "opto_core.kernel.values",
    # llm
    "OpenAIChat": "opto_core.llm.client",
    "LLMError": "opto_core.llm.client",
    "ContextWindowExceeded": "opto_core.llm.client",
    "ChatResult": "opto_core.llm.usage",
    "Usage": "opto_core.llm.usage",
    # optimizers
    "Optimizer": "opto_core.optimizers.protocol",
    "Proposal": "opto_core.optimizers.protocol",
    "LLMOptimizer": "opto_core.optimizers.llm_optimizer",
    "OptoPrime": "opto_core.optimizers.optoprime",
    "OptoPrimeNoTrace": "opto_core.optimizers.optoprime",
    "Hybrid": "opto_core.optimizers.hybrid",
    "Search": "opto_core.optimizers.search",
    "OPRO": "opto_core.optimizers.opro",
    # engine
    "optimize": "opto_core.engine.loop",
    "evaluate": "opto_core.engine.loop",
    "OptimizationResult": "opto_core.engine.loop",
    "OptimizerFailed": "opto_core.engine.loop",
    "Settings": "opto_core.engine.settings",
    "SettingError": "opto_core.engine.settings",
    "WroteAroundOptimizer": "opto_core.engine.guard",
    "coverage": "opto_core.engine.coverage",
    "Coverage": "opto_core.engine.coverage",
    "CoverageError": "opto_core.engine.coverage",
    "Target": "opto_core.engine.target",
    "BoundTarget": "opto_core.engine.target",
    "FunctionTarget": "opto_core.engine.target",
    "Executor": "opto_core.engine.executors",
    "ThreadExecutor": "opto_core.engine.executors",
    "AsyncioExecutor": "opto_core.engine.executors",
    "InfrastructureError": "opto_core.engine.executors",
    "FeedbackError": "opto_core.engine.executors",
    "RayExecutor": "opto_core.engine.executors.ray_cluster",
    "WorkflowExit": "opto_core.engine.executors",
    "ProcessExecutor": "opto_core.engine.executors.process",
    "WorkerLost": "opto_core.engine.executors.process",
    "register_output_type": "opto_core.engine.executors.transfer",
    "Sandbox": "opto_core.engine.sandbox",
    "SandboxUnavailable": "opto_core.engine.sandbox",
    "RunDir": "opto_core.engine.rundir",
    "RunDirError": "opto_core.engine.rundir",
    "CorruptRun": "opto_core.engine.rundir",
    "NotARun": "opto_core.engine.rundir",
    "RunLocked": "opto_core.engine.rundir",
    "RunDirUnwritable": "opto_core.engine.rundir",
    "WorkflowChanged": "opto_core.engine.fingerprint",
    "RunDisplay": "opto_core.engine.progress",
    "ProviderFailure": "opto_core.engine.provider_errors",
    "provider_failure": "opto_core.engine.provider_errors",
    **dict.fromkeys(
        (
            "RunEvent",
            "RunStarted",
            "StepStarted",
            "EvaluationDone",
            "ProviderRetrying",
            "OptimizerCallStarted",
            "OptimizerCallFinished",
            "StepDecided",
            "RunFinished",
        ),
        "opto_core.engine.events",
    ),
    # gateway
    "Gateway": "opto_core.gateway.proxy",
    "GatewayTarget": "opto_core.gateway.target",
    "TrafficParameters": "opto_core.gateway.parameters",
    "load_spans": "opto_core.gateway.otel",
    "to_spans": "opto_core.gateway.otel",
    "optimize_offline": "opto_core.gateway.offline",
    # app
    "write_report": "opto_core.app.report",
    "MlflowTracker": "opto_core.app.tracking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'opto_core' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


_moved.keep_functions(__import__("sys").modules[__name__], ("backward", "render"))


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
